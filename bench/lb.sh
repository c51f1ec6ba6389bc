#!/usr/bin/env bash
# L4 load balancer benchmark: `haplane lb run` side by side with haproxy 2.6
# configured as in the kubeadm HA guide (mode tcp, roundrobin, HTTPS
# /healthz checks), and the same haproxy with `option splice-auto`, in one
# run on one lab:
#
#   client ns (10.77.40.10) --- bridge ns --- proxy ns (10.77.40.20)
#                                   \------- backend ns x3 (10.77.40.31-33)
#
# Each backend runs bench/lib/lbbackend: HTTPS and plain HTTP on :6443.
# Rows: wrk keep-alive HTTP, wrk with a new connection per request, a new
# TLS connection per request (bench/lib/lbload), and bulk transfer (lbload
# streaming). Each row is measured direct to one backend and through each
# proxy, and printed as a ratio to direct and haplane/haproxy, with the CPU
# seconds each proxy used during its run and its RSS.
#
# LB_BENCH_MODE=node-local measures the node-local load balancer a worker
# runs instead (issue 17): the proxies are `haplane agent --role worker`
# (loadBalancer.nodeLocal, discovery none: the cluster file's three nodes,
# its health checks to them) and the same haproxy configurations bound to
# 127.0.0.1, both in one worker namespace, and the client runs in that
# namespace too and connects over loopback, as the worker's kubelet,
# kube-proxy and host-network pods do (haproxy on 127.0.0.1 stands for the
# node-local load balancers of KubePrism/k3s-style setups: tcp mode, round
# robin, HTTPS /healthz checks):
#
#   worker ns (10.77.40.20: client, proxies on 127.0.0.1) --- bridge ns
#                                   \------- backend ns x3 (10.77.40.31-33)
#
# "direct" is then from the worker to one backend's address.
#
# Usage: sudo [LB_BENCH_MODE=node-local] bench/lb.sh [seconds per measurement, default 6]
# HAPLANE_LB_CPU_PROFILE=FILE writes a CPU profile of haplane; LB_BENCH_ROWS
# (e.g. "keepalive bulk") limits the rows; LB_BENCH_ROUNDS (default 3) sets
# the interleaved rounds; HAPLANE_LB_GOMAXPROCS sets haplane's GOMAXPROCS.
# LB_BENCH_HAPLANE_B=BINARY adds a second haplane build as the target
# "haplane-b" (an A/B of two versions in the same rounds), printed after
# the table as its ratio to haplane.
# Needs root, iproute2, haproxy and wrk (apt-get install -y haproxy wrk).
# Takes about 50 x seconds (16 cells x 3 rounds) plus setup.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-6}
MODE=${LB_BENCH_MODE:-vip}
case $MODE in
vip | node-local) ;;
*) echo "LB_BENCH_MODE=$MODE: want vip (default) or node-local" >&2; exit 2 ;;
esac
if [ "$MODE" = node-local ] && [ -n "${HAPLANE_LB_CPU_PROFILE:-}" ]; then
	echo "HAPLANE_LB_CPU_PROFILE: only with \`haplane lb run\` (LB_BENCH_MODE=vip)" >&2
	exit 2
fi
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
for c in haproxy wrk ip go; do
	command -v $c >/dev/null || { echo "needs $c (apt-get install -y haproxy wrk)" >&2; exit 1; }
done

id=$$
tmp=$(mktemp -d /tmp/haplane-lb-bench.XXXXXX)
BR=h4br$id C=h4c$id P=h4p$id
B=(h4b1$id h4b2$id h4b3$id)
BIP=(10.77.40.31 10.77.40.32 10.77.40.33)
PIP=10.77.40.20 CIP=10.77.40.10
# Where the proxies listen: the proxy host's address, or loopback on the
# worker, whose namespace the client then shares.
LIP=$PIP
if [ "$MODE" = node-local ]; then
	LIP=127.0.0.1 C=$P
fi
pids=()

cleanup() {
	local rc=$?
	if [ $rc != 0 ]; then
		for f in "$tmp"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }; done
	fi
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	for ns in $C $P "${B[@]}" $BR; do ip netns del "$ns" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT

echo "# building" >&2
go build -o "$tmp/haplane" ./cmd/haplane
go build -o "$tmp/lbbackend" ./bench/lib/lbbackend
go build -o "$tmp/lbload" ./bench/lib/lbload

echo "# lab ($MODE): namespaces on a bridge, 10.77.40.0/24" >&2
ip netns add $BR
ip -n $BR link add br0 type bridge
ip -n $BR link set br0 up
ip -n $BR link set lo up
n=0
attach() { # ns addr
	local ns=$1 addr=$2 v=h4v$n$id
	n=$((n + 1))
	ip netns add "$ns"
	ip -n $BR link add "$v" type veth peer name eth0 netns "$ns"
	ip -n $BR link set "$v" master br0 up
	ip -n "$ns" addr add "$addr/24" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$ns" link set lo up
}
attach $P $PIP
[ "$MODE" = node-local ] || attach $C $CIP
# Through a proxy, wrk often closes first (it closes on the response,
# before the proxy's FIN), so its sockets linger in TIME_WAIT; at a few
# thousand connections a second the client runs out of ports to one
# target and its connects crawl (seen as one proxy dropping to ~300 req/s
# in some rounds). Reusing TIME_WAIT ports for new connects keeps the
# new-connection row about the proxies, not the client's port allocator.
# (On the worker the proxies' connects to the backends share that
# allocator with the client's.)
ip netns exec $C sysctl -qw net.ipv4.tcp_tw_reuse=1
for i in 0 1 2; do attach "${B[$i]}" "${BIP[$i]}"; done

"$tmp/lbbackend" -gen -dir "$tmp" -ips "$(IFS=,; echo "${BIP[*]}")"
for i in 0 1 2; do
	ip netns exec "${B[$i]}" "$tmp/lbbackend" -addr "${BIP[$i]}:6443" -dir "$tmp" &
	pids+=($!)
done

# haplane: the cluster file of a three-node control plane on this subnet.
cat >"$tmp/haplane.yaml" <<EOF
apiVersion: haplane.dev/v1alpha1
kind: Cluster
name: lbbench
controlPlaneEndpoint:
  vip: 10.77.40.100
  port: 8443
  apiServerPort: 6443
vip:
  interface: eth0
  virtualRouterID: 51
certificates:
  dir: $tmp
nodes:
  - name: cp1
    address: ${BIP[0]}
  - name: cp2
    address: ${BIP[1]}
  - name: cp3
    address: ${BIP[2]}
EOF
# A worker's load balancer takes its pool from the file alone here
# (discovery none: there is no cluster to watch EndpointSlices in).
[ "$MODE" = vip ] || cat >>"$tmp/haplane.yaml" <<EOF
loadBalancer:
  nodeLocal:
    listen: 127.0.0.1:8443
    discovery: none
EOF
start_haplane() { # binary port metrics-port log
	if [ "$MODE" = vip ]; then
		ip netns exec $P env ${HAPLANE_LB_GOMAXPROCS:+GOMAXPROCS=$HAPLANE_LB_GOMAXPROCS} "$1" lb run --config "$tmp/haplane.yaml" --listen $LIP:$2 \
			--metrics-addr 127.0.0.1:$3 --log-level warn ${HAPLANE_LB_CPU_PROFILE:+--cpu-profile "$HAPLANE_LB_CPU_PROFILE"} \
			>"$4" 2>&1 &
	else
		# As the worker unit runs it, with its state and a kubeconfig
		# that does not exist (no discovery, no control-plane agents to
		# follow maintenance from: it warns and balances the file's
		# nodes); its local API serves /metrics.
		mkdir -p "$tmp/state-$2"
		ip netns exec $P env ${HAPLANE_LB_GOMAXPROCS:+GOMAXPROCS=$HAPLANE_LB_GOMAXPROCS} "$1" --log-level warn agent --role worker \
			--config "$tmp/haplane.yaml" --listen $LIP:$2 --kubeconfig "$tmp/no-kubelet.conf" \
			--state-dir "$tmp/state-$2" --api-addr 127.0.0.1:$3 \
			>"$4" 2>&1 &
	fi
	pids+=($!)
	STARTED=$!
}
start_haplane "$tmp/haplane" 8443 9443 "$tmp/haplane.log"
HAPLANE_PID=$STARTED

# haproxy as in the kubeadm HA guide (docs ha-considerations, "haproxy
# configuration"): mode tcp frontend, roundrobin, HTTPS GET /healthz checks.
haproxy_cfg() { # port extra-defaults-line
	cat <<EOF
global
defaults
    mode                    http
    option                  dontlognull
    option http-server-close
    option                  redispatch
    retries                 1
    timeout http-request    10s
    timeout queue           20s
    timeout connect         5s
    timeout client          35s
    timeout server          35s
    timeout http-keep-alive 10s
    timeout check           10s
    $2
frontend apiserver
    bind $LIP:$1
    mode tcp
    default_backend apiserverbackend
backend apiserverbackend
    option httpchk
    http-check connect ssl
    http-check send meth GET uri /healthz
    http-check expect status 200
    mode tcp
    balance     roundrobin
    server cp1 ${BIP[0]}:6443 check verify none
    server cp2 ${BIP[1]}:6443 check verify none
    server cp3 ${BIP[2]}:6443 check verify none
EOF
}
haproxy_cfg 8444 "" >"$tmp/haproxy.cfg"
haproxy_cfg 8445 "option splice-auto" >"$tmp/haproxy-splice.cfg"
ip netns exec $P haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
pids+=($!)
HAPROXY_PID=$!
ip netns exec $P haproxy -db -f "$tmp/haproxy-splice.cfg" >"$tmp/haproxy-splice.log" 2>&1 &
pids+=($!)
SPLICE_PID=$!

declare -A ADDR=([direct]=${BIP[0]}:6443 [haplane]=$LIP:8443 [haproxy]=$LIP:8444 [haproxy-splice]=$LIP:8445)
declare -A PID=([haplane]=$HAPLANE_PID [haproxy]=$HAPROXY_PID [haproxy-splice]=$SPLICE_PID)
TARGETS=(direct haplane haproxy haproxy-splice)
if [ -n "${LB_BENCH_HAPLANE_B:-}" ]; then
	HAPLANE_LB_CPU_PROFILE='' start_haplane "$LB_BENCH_HAPLANE_B" 8446 9446 "$tmp/haplane-b.log"
	ADDR[haplane-b]=$LIP:8446 PID[haplane-b]=$STARTED
	TARGETS+=(haplane-b)
fi

incl() { ip netns exec $C "$@"; }
# Wait until every target serves TLS through to a backend (checks passed).
for t in "${TARGETS[@]}"; do
	for _ in $(seq 100); do
		out=$(incl "$tmp/lbload" -mode tls -target "${ADDR[$t]}" -c 1 -d 300ms 2>/dev/null || true)
		case $out in "0.0 "* | "") sleep 0.1 ;; *errors=0) break ;; *) sleep 0.1 ;; esac
	done
done
sleep 1 # let every proxy's checks mark all backends up

tck=$(getconf CLK_TCK)
cpu() { awk -v t="$tck" '{printf "%.2f", ($14+$15)/t}' "/proc/$1/stat"; }
rss() { awk '/VmRSS/{printf "%.1f", $2/1024}' "/proc/$1/status"; }
rss_split() { awk '/^RssAnon/{a=$2} /^RssFile/{f=$2} /^RssShmem/{m=$2} END{printf "%.1f + %.1f + %.1f", a/1024, f/1024, m/1024}' "/proc/$1/status"; }

row() { # name target -> rate
	local name=$1 t=$2 a=${ADDR[$2]} out
	case $name in
	keepalive) out=$(incl wrk -t2 -c64 -d"${D}s" "http://$a/" | awk '/Requests\/sec/{print $2}') ;;
	newconn) out=$(incl wrk -t2 -c64 -d"${D}s" -H 'Connection: close' "http://$a/" | awk '/Requests\/sec/{print $2}') ;;
	tls) out=$(incl "$tmp/lbload" -mode tls -target "$a" -c 32 -d "${D}s" | awk '{print $1}') ;;
	bulk) out=$(incl "$tmp/lbload" -mode bulk -target "$a" -c 4 -d "${D}s" | awk '{print $1}') ;;
	esac
	echo "${out:-0}"
}

declare -A R CPU
read -ra ROWS <<<"${LB_BENCH_ROWS:-keepalive newconn tls bulk}"
ROUNDS=${LB_BENCH_ROUNDS:-3}
# Rounds interleave the targets (in a rotating order) so that noise from
# other work on the machine spreads over all of them; each cell is the
# median of its rounds, CPU the mean per measurement.
echo "# measuring ${D}s per cell, $ROUNDS rounds" >&2
for round in $(seq "$ROUNDS"); do
	for r in "${ROWS[@]}"; do
		k=$((round % ${#TARGETS[@]}))
		order=("${TARGETS[@]:$k}" "${TARGETS[@]:0:$k}")
		for t in "${order[@]}"; do
			before=0
			[ "$t" = direct ] || before=$(cpu "${PID[$t]}")
			v=$(row "$r" "$t")
			R[$r,$t]="${R[$r,$t]:-} $v"
			[ "$t" = direct ] || CPU[$r,$t]="${CPU[$r,$t]:-} $(awk -v a="$before" -v b="$(cpu "${PID[$t]}")" 'BEGIN{printf "%.2f", b-a}')"
			echo "#   round $round $r $t $v" >&2
		done
	done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
mean() { tr ' ' '\n' | grep . | awk '{s+=$1} END{printf "%.2f", s/NR}'; }
for k in "${!R[@]}"; do R[$k]=$(echo "${R[$k]}" | median); done
for k in "${!CPU[@]}"; do CPU[$k]=$(echo "${CPU[$k]}" | mean); done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "n/a" }'; }
declare -A UNIT=([keepalive]=req/s [newconn]=req/s [tls]=req/s [bulk]=MB/s)
declare -A LABEL=([keepalive]="wrk keep-alive HTTP" [newconn]="wrk new connection/request" [tls]="new TLS connection/request" [bulk]="bulk transfer (4 streams)")
echo
echo "| row | direct | haplane | haproxy | haproxy splice | haplane/direct | haproxy/direct | splice/direct | haplane/haproxy | haplane/splice |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for r in "${ROWS[@]}"; do
	d=${R[$r,direct]} h=${R[$r,haplane]} x=${R[$r,haproxy]} s=${R[$r,haproxy-splice]}
	echo "| ${LABEL[$r]} (${UNIT[$r]}) | $d | $h | $x | $s | $(ratio "$h" "$d") | $(ratio "$x" "$d") | $(ratio "$s" "$d") | $(ratio "$h" "$x") | $(ratio "$h" "$s") |"
done
echo
echo "| row (CPU seconds per ${D}s measurement) | haplane | haproxy | haproxy splice |"
echo "|---|---|---|---|"
for r in "${ROWS[@]}"; do
	echo "| ${LABEL[$r]} | ${CPU[$r,haplane]} | ${CPU[$r,haproxy]} | ${CPU[$r,haproxy-splice]} |"
done
if [ -n "${LB_BENCH_HAPLANE_B:-}" ]; then
	echo
	echo "| row | haplane | haplane-b | b/haplane | CPU haplane | CPU haplane-b |"
	echo "|---|---|---|---|---|---|"
	for r in "${ROWS[@]}"; do
		echo "| ${LABEL[$r]} | ${R[$r,haplane]} | ${R[$r,haplane-b]} | $(ratio "${R[$r,haplane-b]}" "${R[$r,haplane]}") | ${CPU[$r,haplane]} | ${CPU[$r,haplane-b]} |"
	done
fi
echo
echo "RSS at the end (MiB): haplane $(rss "$HAPLANE_PID"), haproxy $(rss "$HAPROXY_PID"), haproxy splice $(rss "$SPLICE_PID")"
# The split, for an honest comparison: anonymous pages (heap, stacks,
# buffers: what the process really costs) vs file pages (its executable
# and libraries, clean page cache the kernel can drop and share). Most of
# haplane's file pages are the one large binary's: package init fills the
# heap with registries (client-go's scheme, etcd's and protobuf's
# descriptors), and each GC cycle reads their type data in the binary's
# read-only pages, so dropping those pages does not last.
echo "RSS split (MiB, anon + file + shmem): haplane $(rss_split "$HAPLANE_PID"), haproxy $(rss_split "$HAPROXY_PID"), haproxy splice $(rss_split "$SPLICE_PID")"
# Where haplane's RSS is: anonymous (heap, stacks, runtime) vs file-backed
# (the binary's pages), and the Go runtime's own view from its metrics.
awk '/^(Rss|Anonymous|Pss_File|Pss_Anon):/{printf "%s %.1f MiB  ", $1, $2/1024} END{print ""}' "/proc/$HAPLANE_PID/smaps_rollup" | sed 's/^/haplane smaps: /'
if command -v curl >/dev/null; then
	ip netns exec $P curl -s http://127.0.0.1:9443/metrics | awk '/^go_memstats_(heap_inuse|heap_idle|heap_released|stack_inuse|sys|next_gc)_bytes |^go_goroutines |^go_threads /{printf "%s %.1f%s  ", $1, ($1 ~ /bytes/ ? $2/1048576 : $2), ($1 ~ /bytes/ ? "MiB" : "")} END{print ""}' | sed 's/^/haplane runtime: /'
fi
echo "Mode: $MODE ($([ "$MODE" = vip ] && echo "haplane lb run and haproxy on $PIP, the client on $CIP" || echo "haplane agent --role worker and haproxy on 127.0.0.1, the client beside them"))"
echo "Machine: $(nproc) CPUs, $(uname -r), $(haproxy -v | head -1 | cut -d' ' -f1-3), wrk $(wrk -v 2>&1 | head -1 | cut -d' ' -f2), ${D}s per cell, median of $ROUNDS interleaved rounds"
