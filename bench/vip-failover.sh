#!/usr/bin/env bash
# VIP failover benchmark: haplane's defaults (VRRPv3, 100 ms) side by side
# with keepalived configured as in the kubeadm HA guide (VRRPv2, advert 1 s,
# PASS auth) and keepalived at VRRPv3 100 ms. Each run builds a fresh lab of
# three hosts and a client in network namespaces on a bridge (10.77.3.0/24),
# the client opens a TCP connection to the VIP every 10 ms, and the longest
# gap around the event is the outage. From the speakers' state logs each run
# also yields the longest time two masters coexisted after the event (the
# old master is not counted once it left the link; after a partition heals,
# every node is): "dual runs" counts the runs that had two masters at once,
# "dual max" is the longest overlap.
#
# Usage: sudo bench/vip-failover.sh [runs per scenario, default 5]
# Needs root, iproute2 and keepalived. Prints the outage's min/median/max and
# the dual-master count and max per scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
command -v keepalived >/dev/null || { echo "needs keepalived (apt-get install -y keepalived)" >&2; exit 1; }
HAPLANE_BENCH_VIP=$runs go test -count=1 -timeout 60m -run '^TestBenchVIPFailover$' ./test/e2e/vip/ -v 2>&1 |
  tee /tmp/vip-failover.$$.log | grep -E '^(implementation|haplane|keepalived)|FAIL|^ok' 
