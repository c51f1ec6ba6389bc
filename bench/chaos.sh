#!/usr/bin/env bash
# bench/chaos.sh: every `haplane lab chaos` scenario against the same lab
# (three control-plane hosts with real kube-apiserver, controller-manager and
# scheduler), once with haplane's agent holding the VIP and balancing, once
# with the classic recipe (keepalived + haproxy as in kubeadm's HA guide),
# in one run; then a side-by-side table with the classic/haplane ratio of
# the client's longest gap.
#
# Usage: sudo bench/chaos.sh [SCENARIOS]   (default all; comma-separated)
# UPGRADE_TO=v1.37.2 (the default) is the release the rolling-upgrade
# scenario moves each stack's control plane to; UPGRADE_TO= skips it.
# Needs: root, iproute2, Go, keepalived, haproxy, curl; the Kubernetes
# binaries are built on first use (tools/k8s/build.sh) or taken from
# HAPLANE_K8S_BIN. Reports land in bench/out/chaos-<stack>/.
set -euo pipefail
SCEN=${1:-all}
UPGRADE_TO=${UPGRADE_TO-v1.37.2}
UP=()
[ -n "$UPGRADE_TO" ] && UP=(--upgrade-to "$UPGRADE_TO")
[ "$(id -u)" = 0 ] || { echo "bench/chaos.sh: needs root (network namespaces)" >&2; exit 2; }
cd "$(dirname "$0")/.."
go build -o bench/out/haplane ./cmd/haplane
HP=bench/out/haplane
K8S=()
[ -n "${HAPLANE_K8S_BIN:-}" ] && K8S=(--k8s-bin "$HAPLANE_K8S_BIN")
DIR=$(mktemp -d /tmp/haplane-chaos-bench.XXXXXX)
trap '$HP lab down --dir "$DIR/lab" >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
for stack in haplane classic; do
  echo "== $stack"
  $HP lab up --dir "$DIR/lab" --prefix hpbc --vip-lb "$stack" "${K8S[@]}" >/dev/null
  # A scenario that fails still has its row: keep going.
  $HP -o json lab chaos --dir "$DIR/lab" --scenario "$SCEN" "${UP[@]}" --report "bench/out/chaos-$stack" >/dev/null || true
  $HP lab down --dir "$DIR/lab" >/dev/null
done
echo
echo "Machine: $(nproc) CPUs, $(uname -r), $(keepalived --version 2>&1 | head -1), $(haproxy -v | head -1 | cut -d' ' -f1-3)"
go run ./bench/lib/chaoscmp bench/out/chaos-haplane/chaos.json bench/out/chaos-classic/chaos.json
