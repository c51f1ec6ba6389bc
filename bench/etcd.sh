#!/usr/bin/env bash
# bench/etcd.sh: time from nothing to a healthy 3-member TLS etcd cluster, and
# put latency p50/p99 through it.
#
# Three network namespaces are the hosts (10.77.5.11-13 on a bridge that lives
# in a fourth namespace; no host interface is touched). The cluster file comes
# from `haplane init`, the certificates from `haplane pki generate`, and each
# host runs `haplane etcd run`. "Healthy" is `haplane etcd status` exiting 0:
# every member healthy and the cluster fault tolerant. Latency is measured by
# BenchmarkPutLatency (internal/etcdnode) from the first host: sequential
# 256-byte puts, each acknowledged by a quorum.
#
# Usage: sudo bench/etcd.sh [ROUNDS] [PUTS]   (defaults 3 rounds, 2000 puts)
# Needs: root, iproute2, Go.
set -euo pipefail
ROUNDS=${1:-3}
PUTS=${2:-2000}
[ "$(id -u)" = 0 ] || { echo "bench/etcd.sh: needs root (network namespaces)" >&2; exit 2; }
cd "$(dirname "$0")/.."
W=$(mktemp -d /tmp/haplane-etcd-bench.XXXXXX)
S=$$ # suffix for unique names
NS_SW=e5sw$S
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for i in 1 2 3; do ip netns del e5h$i$S 2>/dev/null || true; done
  ip netns del $NS_SW 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

echo "building haplane and the etcdnode benchmark..." >&2
go build -o "$W/haplane" ./cmd/haplane
go test -c -o "$W/etcdnode.test" ./internal/etcdnode
H="$W/haplane"

"$H" init --out "$W/haplane.yaml" --force --name bench \
  --node e1=10.77.5.11 --node e2=10.77.5.12 --node e3=10.77.5.13 \
  --vip 10.77.5.100 --interface eth0 >/dev/null
"$H" pki generate --config "$W/haplane.yaml" --out "$W/hosts" >/dev/null
for i in 1 2 3; do
  # Each host reads its own PKI folder.
  sed "s|^  # dir: /etc/kubernetes/pki.*|  dir: $W/hosts/e$i/pki|" "$W/haplane.yaml" >"$W/e$i.yaml"
  grep -q "dir: $W/hosts/e$i/pki" "$W/e$i.yaml" || { echo "could not set certificates.dir" >&2; exit 1; }
done

ip netns add $NS_SW
ip -n $NS_SW link add br0 type bridge
ip -n $NS_SW link set br0 up
for i in 1 2 3; do
  ns=e5h$i$S
  ip netns add $ns
  ip link add e5a$i$S type veth peer name e5b$i$S
  ip link set e5a$i$S netns $NS_SW
  ip link set e5b$i$S netns $ns
  ip -n $NS_SW link set e5a$i$S master br0 up
  ip -n $ns link set e5b$i$S name eth0
  ip -n $ns addr add 10.77.5.1$i/24 dev eth0
  ip -n $ns link set eth0 up
  ip -n $ns link set lo up
done

now() { date +%s.%N; }
results=()
for r in $(seq 1 "$ROUNDS"); do
  PIDS=()
  rm -rf "$W"/data*
  t0=$(now)
  for i in 1 2 3; do
    ip netns exec e5h$i$S "$H" etcd run --config "$W/e$i.yaml" --node e$i --data-dir "$W/data$i" \
      --log-level warn 2>"$W/run$i.log" &
    PIDS+=($!)
  done
  ok=
  for _ in $(seq 1 600); do
    if ip netns exec e5h1$S "$H" etcd status --config "$W/e1.yaml" >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.05
  done
  t1=$(now)
  [ -n "$ok" ] || { echo "round $r: cluster not healthy after 30s" >&2; tail -5 "$W"/run*.log >&2; exit 1; }
  s=$(echo "$t1 - $t0" | bc -l)
  printf 'round %d: healthy 3-member TLS cluster in %.2fs\n' "$r" "$s"
  results+=("$s")
  if [ "$r" = "$ROUNDS" ]; then
    ip netns exec e5h1$S "$H" etcd status --config "$W/e1.yaml" || true
    P=$W/hosts/e1/pki/etcd
    HAPLANE_BENCH_ENDPOINTS=https://10.77.5.11:2379,https://10.77.5.12:2379,https://10.77.5.13:2379 \
    HAPLANE_BENCH_CERT=$P/healthcheck-client.crt HAPLANE_BENCH_KEY=$P/healthcheck-client.key HAPLANE_BENCH_CA=$P/ca.crt \
      ip netns exec e5h1$S "$W/etcdnode.test" -test.run '^$' -test.bench BenchmarkPutLatency -test.benchtime "${PUTS}x" | grep Benchmark
  fi
  for p in "${PIDS[@]}"; do kill -TERM "$p"; done
  for p in "${PIDS[@]}"; do wait "$p" || true; done
  PIDS=()
done
printf '%s\n' "${results[@]}" | sort -n | awk '{a[NR]=$1} END {printf "bring-up over %d rounds: min %.2fs median %.2fs max %.2fs\n", NR, a[1], a[int((NR+1)/2)], a[NR]}'
