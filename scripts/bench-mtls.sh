#!/usr/bin/env bash
# Between two hosts, three ways: dmsc's mutual TLS tunnel (a workload on a
# connects to a VIP, connect4 hands it to a's tunnel, which carries it as
# a stream over one TLS 1.3 connection to b's tunnel, which delivers it),
# the sidecar pair it replaces (HAProxy on a originating TLS 1.3 per
# connection, HAProxy on b terminating it, both with client certificates
# from the same CA and the same cipher), and plain TCP straight to the
# backend. Hosts are network namespaces on one bridge; the backends
# (dmsc-testsrv, iperf3 -s) run on b. Each proxy gets one thread (the
# tunnel is one event loop).
#
# Measured per path: request/response over 4 kept-alive connections (wrk:
# req/s, p50, p99), new connections per second (wrk, one request per
# connection), bulk throughput (iperf3, one connection); CPU of the two
# proxies (user+system of a's and b's) per request and per GB. With
# BENCH_PERF=1 (or rr), perf samples each side's tunnel under
# request/response and prints its top symbols; BENCH_PERF=bulk under
# iperf3, BENCH_PERF=rr,bulk both, haproxy-bulk the HAProxy pair under
# iperf3 (BENCH_PERF_TOP lines, 14; perf record
# takes BENCH_PERF_ARGS too, and the samples are copied to the directory
# BENCH_PERF_KEEP names). BENCH_ONLY=bulk measures bulk alone.
#
# Prints a table and the ratios against the HAProxy pair, the CPU time the
# hypervisor stole during each measurement (steal in /proc/stat), and writes
# $BUILD/bench-mtls.json. Figures only: nothing here passes or fails on
# speed. BENCH_SECONDS (default 5) per measurement. BENCH_TUNNEL_FASTPATH=on
# runs the tunnels with dmscd --tunnel-fastpath on (docs/design.md
# decision 76: the workloads' connections to a's tunnel then take the
# same-host fast path instead of loopback TCP), to compare the two.
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
. "$TOP/scripts/bench-lib.sh"
bench_begin bench-mtls bmt$$ 5
A=198.18.15.1 B=198.18.15.2 VIP=198.19.15.1
CIPHER=TLS_AES_256_GCM_SHA384 # what OpenSSL 3 picks first, as in the tunnel
TUNNEL_FP=${BENCH_TUNNEL_FASTPATH:-off} # dmscd --tunnel-fastpath (on: the tunnel under the mesh cgroup)

bench_need bench-mtls wrk haproxy iperf3 jq

suite_cleanup() { # after bench_stop_pids
	rm -f /run/dmsc/dmsc-tunnel."${DPID_A:-x}".prom /run/dmsc/dmsc-tunnel."${DPID_B:-x}".prom
	[[ -n ${PIN_A:-} ]] && DMSC_PIN_DIR=$PIN_A "$CTL" uninstall >/dev/null 2>&1
}

PIN_A=$T/bpffs/dmsc-a
export DMSC_PIN_DIR=$T/bpffs/dmsc-b
dmsc_net_hosts a="$A/16" b="$B/16" || exit 1
MESH_A=$(dmsc_cgroup_make "$P/a") || exit 1
MESH_B=$(dmsc_cgroup_make "$P/b") || exit 1

# ---- certificates: one CA, a host certificate each (HAProxy: a PEM) -----
"$CTL" ca init "$T/ca" --trust-domain bench.test >/dev/null &&
	"$CTL" ca issue "$T/ca" --host node-a --out "$T/a" >/dev/null &&
	"$CTL" ca issue "$T/ca" --host node-b --out "$T/b" >/dev/null || exit 1
for h in a b; do
	cat "$T/$h/host.crt" "$T/$h/host.key" >"$T/$h.pem" && chmod 600 "$T/$h.pem"
done

# ---- backends on b, outside b's mesh cgroup (no guard) -------------------
ip netns exec "${P}b" "$BUILD/tools/dmsc-testsrv" --name web --mode http --listen "$B:8080" \
	--max-seconds 3600 >"$T/web.out" 2>&1 &
PIDS+=($!)
ip netns exec "${P}b" iperf3 -s -B "$B" -p 5201 >"$T/iperf-s.out" 2>&1 &
PIDS+=($!)
dmsc_wait_ready "$T/web.out" 10 || exit 1

# ---- dmsc: dmscd on each host, the kernel's handoff on a -----------------
cat >"$T/mesh.json" <<EOF
{ "mtls": "required",
  "hosts": { "node-a": "$A:15008", "node-b": "$B:15008" },
  "services": [
    { "name": "web", "vip": "$VIP", "port": 80,
      "backends": [ { "address": "$B", "port": 8080, "host": "node-b" } ] },
    { "name": "bulk", "vip": "$VIP", "port": 5201,
      "backends": [ { "address": "$B", "port": 5201, "host": "node-b" } ] } ] }
EOF
DMSC_PIN_DIR=$PIN_A "$CTL" install --cgroup "$MESH_A" >/dev/null || exit 1
"$CTL" install --cgroup "$MESH_B" >/dev/null || exit 1
start_dmscd() { # HOST PIN_DIR ADDR: dmscd's pid
	# shellcheck disable=SC2016 # expanded by the inner shell
	nsenter --net="/run/netns/${P}$1" bash -c 'echo $$ >"$0"; exec "$@"' "$T/dmscd-$1.pid" \
		"$BUILD/dmscd" --pin-dir "$2" --policy "$T/mesh.json" --mtls-dir "$T/$1" \
		--mtls-listen "$3:15008" --tunnel-fastpath "$TUNNEL_FP" --metrics off >>"$T/dmscd-$1.log" 2>&1 &
	t_wait 5 test -s "$T/dmscd-$1.pid" && cat "$T/dmscd-$1.pid"
}
DPID_B=$(start_dmscd b "$DMSC_PIN_DIR" "$B") && PIDS+=("$DPID_B")
DPID_A=$(start_dmscd a "$PIN_A" "$A") && PIDS+=("$DPID_A")
t_wait 20 grep -q "takes the kernel's handoffs" "$T/dmscd-a.log" &&
	t_wait 20 bash -c "ip netns exec ${P}b ss -Htln '( sport = :15008 )' | grep -q ." || {
	echo "bench-mtls: the tunnels did not start"
	cat "$T"/dmscd-*.log
	exit 1
}
TUN_A=$(pgrep -P "$DPID_A" -f "dmsc-l7 tunnel" | head -1)
TUN_B=$(pgrep -P "$DPID_B" -f "dmsc-l7 tunnel" | head -1)

# ---- the HAProxy pair ---------------------------------------------------
hap_cfg() { # FRONTEND-LINES BACKEND-LINES
	bench_haproxy_head 1 4000 tcp 60s "ssl-default-bind-ciphersuites $CIPHER" \
		"ssl-default-server-ciphersuites $CIPHER" "ssl-default-bind-options ssl-min-ver TLSv1.3" \
		"ssl-default-server-options ssl-min-ver TLSv1.3"
	printf '%s\n%s\n' "$1" "$2"
}
hap_cfg "listen web
	bind $A:10080
	server b $B:18443 ssl crt $T/a.pem ca-file $T/ca/ca.crt verify required
listen bulk
	bind $A:15201
	server b $B:15202 ssl crt $T/a.pem ca-file $T/ca/ca.crt verify required" "" >"$T/hap-a.cfg"
hap_cfg "listen web
	bind $B:18443 ssl crt $T/b.pem ca-file $T/ca/ca.crt verify required
	server web $B:8080
listen bulk
	bind $B:15202 ssl crt $T/b.pem ca-file $T/ca/ca.crt verify required
	server bulk $B:5201" "" >"$T/hap-b.cfg"
for h in a b; do
	ip netns exec "${P}$h" haproxy -db -f "$T/hap-$h.cfg" >"$T/hap-$h.out" 2>&1 &
	PIDS+=($!)
	eval "HAP_${h^^}=$!"
done
hap_up() { ip netns exec "${P}a" curl -sf -m 2 -o /dev/null "http://$A:10080/"; }
t_wait 10 hap_up || { echo "bench-mtls: the HAProxy pair does not answer"; cat "$T"/hap-*.out; exit 1; }

client() { dmsc_run_in_cgroup "$MESH_A" ip netns exec "${P}a" "$@"; }
for url in "http://$VIP/" "http://$B:8080/"; do
	client curl -sf -m 5 -o /dev/null "$url" || { echo "bench-mtls: $url does not answer"; exit 1; }
done

HZ=$(getconf CLK_TCK)
# ticks PID...: their user+system ticks, summed
ticks() {
	local n=0 p
	for p in "$@"; do n=$((n + $(cpu_ticks "$p"))); done
	echo "$n"
}

# rr NAME URL PIDS... / conn NAME URL PIDS...: wrk, kept-alive or one
# request per connection; appends "NAME KIND count per-second p50 p99 cpu-s"
wrk_run() {
	local kind=$1 name=$2 url=$3 c0 c1 s0 out hdr=()
	shift 3
	[[ $kind == conn ]] && hdr=(-H "Connection: close")
	out=$T/wrk-$name-$kind.txt
	client wrk -t 1 -c 4 -d 1s "${hdr[@]}" "$url" >/dev/null 2>&1
	c0=$(ticks "$@") s0=$(steal_ticks)
	client timeout $((SECS + 30)) wrk -t 1 -c 4 -d "${SECS}s" --latency "${hdr[@]}" "$url" \
		>"$out" 2>&1
	c1=$(ticks "$@")
	echo "$kind $name $(steal_share "$s0")" >>"$T/steal.txt"
	awk -v name="$name" -v kind="$kind" -v cpu="$((c1 - c0))" -v hz="$HZ" -v secs="$SECS" \
		-v p50="$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")" \
		-v p99="$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")" '
		/requests in/ { reqs = $1 }
		/Non-2xx|Socket errors/ { bad = 1 }
		END { printf "%s %s %d %.1f %.3f %.3f %.3f %d\n", name, kind, reqs, reqs / secs, p50, p99, cpu / hz, bad }' \
		"$out" >>"$T/results.txt"
}

# bulk NAME ADDR PORT PIDS...: iperf3 one connection, a to b
# (and appends "NAME a-ticks b-ticks" to sides.txt: each proxy's share)
bulk_run() {
	local name=$1 addr=$2 port=$3 c0 c1 a0 a1 s0 out
	shift 3
	out=$T/iperf-$name.json
	c0=$(ticks "$@") a0=0 a1=0 s0=$(steal_ticks)
	(($#)) && a0=$(ticks "$1")
	client timeout $((SECS + 30)) iperf3 -c "$addr" -p "$port" -t "$SECS" -J >"$out" 2>&1
	c1=$(ticks "$@")
	echo "bulk $name $(steal_share "$s0")" >>"$T/steal.txt"
	(($#)) && a1=$(ticks "$1") && echo "$name $((a1 - a0)) $((c1 - c0 - a1 + a0))" >>"$T/sides.txt"
	jq -r --arg name "$name" --argjson cpu "$(awk -v c="$((c1 - c0))" -v hz="$HZ" 'BEGIN { print c / hz }')" \
		'"\($name) bulk \(.end.sum_received.bytes) \(.end.sum_received.bits_per_second / 1e9) 0 0 \($cpu) \(if has("error") then 1 else 0 end)"' \
		"$out" >>"$T/results.txt" 2>/dev/null || echo "$name bulk 0 0 0 0 0 1" >>"$T/results.txt"
}

echo "bench-mtls: a -> b, ${SECS}s per measurement; wrk -t1 -c4 (GET, ~4-byte body); iperf3 one connection"
echo "  dmsc:    workload -> VIP -> connect4 -> a's tunnel =TLS 1.3, one connection, streams= b's tunnel -> backend"
echo "  haproxy: workload -> a's HAProxy =TLS 1.3 per connection ($CIPHER)= b's HAProxy -> backend"
echo "  plain:   workload -> backend (TCP, no proxy)"
if [[ ${BENCH_ONLY:-} != bulk ]]; then
	wrk_run rr dmsc "http://$VIP/" "$TUN_A" "$TUN_B"
	wrk_run rr haproxy "http://$A:10080/" "$HAP_A" "$HAP_B"
	wrk_run rr plain "http://$B:8080/"
	wrk_run conn dmsc "http://$VIP/" "$TUN_A" "$TUN_B"
	wrk_run conn haproxy "http://$A:10080/" "$HAP_A" "$HAP_B"
	wrk_run conn plain "http://$B:8080/"
fi
# a's tunnel's stream stalls (its metrics file, rewritten every second:
# read again after the HAProxy run, long past the tunnel's)
# and b's window changes (decision 69): a family's samples as label=value
tunnel_counts() { # PID FAMILY LABEL
	awk -v f="$2" -v l="$3" '$1 ~ "^" f "[{]" { match($0, l "=\"[a-z]+\"")
		printf "%s=%s ", substr($0, RSTART + length(l) + 2, RLENGTH - length(l) - 3), $NF }' \
		"/run/dmsc/dmsc-tunnel.$1.prom" 2>/dev/null
}
stalls() { tunnel_counts "$DPID_A" dmsc_tunnel_stream_stalls_total reason; }
stalls0=$(stalls)
# BENCH_ROUNDS (1) rounds of the two, one after the other: on a loaded
# machine a round's ratio moves with what else runs in it; the table sums
# the rounds and the line below gives each round's
for ((round = 1; round <= ${BENCH_ROUNDS:-1}; round++)); do
	bulk_run dmsc "$VIP" 5201 "$TUN_A" "$TUN_B"
	bulk_run haproxy "$A" 15201 "$HAP_A" "$HAP_B"
done
awk '$2 == "bulk" && $1 != "plain" { g[$1, ++n[$1]] = $4 }
	END { printf "bench-mtls: bulk, dmsc / haproxy pair per round:"
		for (i = 1; i <= n["dmsc"]; i++) printf " x%.2f", (g["haproxy", i] > 0 ? g["dmsc", i] / g["haproxy", i] : 0)
		print "" }' "$T/results.txt"
echo "bench-mtls: a's tunnel, stream stalls (window full, connection buffer full) before the bulk run: ${stalls0:-none}; after it: $(stalls)"
echo "bench-mtls: b's tunnel, stream windows grown and shrunk: $(tunnel_counts "$DPID_B" dmsc_tunnel_stream_window_changes_total change)"
awk -v hz="$HZ" 'NR == FNR { if ($2 == "bulk") bytes[$1] += $3; next }
	{ ca[$1] += $2; cb[$1] += $3 }
	END { for (p in ca) if (bytes[p] > 0)
		printf "bench-mtls: bulk, CPU s/GB of each proxy: %s a %.2f, b %.2f\n", p,
			ca[p] / hz * 1e9 / bytes[p], cb[p] / hz * 1e9 / bytes[p] }' "$T/results.txt" "$T/sides.txt"
bulk_run plain "$B" 5201

awk '
	# bulk rounds: bytes and CPU summed, the rate averaged
	{ k = $1 " " $2; nk[k]++; cnt[k] += $3; rsum[k] += $4; rate[k] = rsum[k] / nk[k]; p50[k] = $5; p99[k] = $6; cpu[k] += $7; bad[k] += $8 }
	function per(k, scale) { return cnt[k] > 0 ? cpu[k] * scale / cnt[k] : 0 }
	function r(a, b) { return b > 0 ? sprintf("x%.2f", a / b) : "-" }
	END {
		printf "%-8s %9s %8s %8s %11s %9s %11s %9s %10s %6s\n", "path", "req/s", "p50 ms", "p99 ms", "CPU us/req", "conn/s", "CPU us/conn", "Gbit/s", "CPU s/GB", "errors"
		split("dmsc haproxy plain", order, " ")
		for (i = 1; i <= 3; i++) { n = order[i]
			printf "%-8s %9.0f %8.3f %8.3f %11.1f %9.0f %11.1f %9.2f %10.2f %6d\n", n,
				rate[n " rr"], p50[n " rr"], p99[n " rr"], per(n " rr", 1e6),
				rate[n " conn"], per(n " conn", 1e6), rate[n " bulk"],
				per(n " bulk", 1e9), bad[n " rr"] + bad[n " conn"] + bad[n " bulk"] }
		printf "dmsc / haproxy pair: p50 %s, p99 %s, CPU/req %s (goals <= x0.70); conn/s %s (goal >= x2); bulk %s (goal >= x1.2); CPU/GB %s\n",
			r(p50["dmsc rr"], p50["haproxy rr"]), r(p99["dmsc rr"], p99["haproxy rr"]),
			r(per("dmsc rr", 1), per("haproxy rr", 1)), r(rate["dmsc conn"], rate["haproxy conn"]),
			r(rate["dmsc bulk"], rate["haproxy bulk"]), r(per("dmsc bulk", 1), per("haproxy bulk", 1))
	}' "$T/results.txt"

# each measurement's CPU the hypervisor gave to other machines: a pair
# compared with one side's CPU stolen is not a quiet comparison
awk '{ k = $1 " " $2; if (k in v) v[k] = v[k] " " $3; else { o[++n] = k; v[k] = $3 } }
	END { printf "bench-mtls: CPU stolen by the hypervisor during each measurement:"
		for (i = 1; i <= n; i++) printf "%s %s %s", (i > 1 ? "," : ""), o[i], v[o[i]]
		print "" }' "$T/steal.txt"

# where the CPU goes: each side's tunnel sampled under request/response
# (BENCH_PERF=1 or rr), under bulk (bulk: iperf3 through the VIP), or both
# (rr,bulk)
perf_load() { # KIND: the load perf samples under, in the background
	if [[ $1 == bulk ]]; then
		client timeout $((SECS + 30)) iperf3 -c "$VIP" -p 5201 -t "$((SECS + 1))" \
			>/dev/null 2>&1 &
	elif [[ $1 == haproxy-bulk ]]; then
		client timeout $((SECS + 30)) iperf3 -c "$A" -p 15201 -t "$((SECS + 1))" \
			>/dev/null 2>&1 &
	else
		client timeout $((SECS + 30)) wrk -t 1 -c 4 -d "$((SECS + 1))s" "http://$VIP/" \
			>/dev/null 2>&1 &
	fi
}
PERF_KINDS=${BENCH_PERF:-0}
[[ $PERF_KINDS == 1 ]] && PERF_KINDS=rr
if [[ $PERF_KINDS != 0 ]] && command -v perf >/dev/null; then
	for kind in ${PERF_KINDS//,/ }; do
		sides=(a:"$TUN_A" b:"$TUN_B") who=tunnel
		[[ $kind == haproxy-* ]] && sides=(a:"$HAP_A" b:"$HAP_B") who=HAProxy
		for side in "${sides[@]}"; do
			perf_load "$kind"
			load=$!
			# shellcheck disable=SC2086 # BENCH_PERF_ARGS: words
			perf record -q -F 999 ${BENCH_PERF_ARGS:-} -o "$T/perf-$kind-${side%%:*}.data" \
				-p "${side#*:}" -- sleep "$SECS" >"$T/perf-$kind-${side%%:*}.out" 2>&1
			wait "$load"
			[[ -n ${BENCH_PERF_KEEP:-} ]] && cp "$T/perf-$kind-${side%%:*}.data" "$BENCH_PERF_KEEP/"
			echo "bench-mtls: perf, ${side%%:*}'s $who under $(sed 's,^rr$,request/response,; s,.*bulk,bulk,' <<<"$kind"), top symbols (self):"
			perf report -q -i "$T/perf-$kind-${side%%:*}.data" --sort dso,symbol --stdio 2>&1 |
				grep -v '^$' | head -"${BENCH_PERF_TOP:-14}"
			echo "  by object: $(perf report -q -i "$T/perf-$kind-${side%%:*}.data" --sort dso \
				--stdio 2>/dev/null | awk 'NF >= 2 && n++ < 5 { printf "%s %s  ", $2, $1 }')"
		done
	done
fi

mkdir -p "$BUILD"
awk -v secs="$SECS" '
	BEGIN { printf "{\"seconds\":%d,\"runs\":[", secs }
	{ printf "%s{\"path\":\"%s\",\"kind\":\"%s\",\"count\":%s,\"per_second\":%s,\"p50_ms\":%s,\"p99_ms\":%s,\"cpu_s\":%s,\"errors\":%d}", (NR > 1 ? "," : ""), $1, $2, $3, $4, $5, $6, $7, $8 }
	END { print "]}" }' "$T/results.txt" >"$BUILD/bench-mtls.json"
echo "bench-mtls: wrote $BUILD/bench-mtls.json"
