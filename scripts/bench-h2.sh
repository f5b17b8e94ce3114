#!/usr/bin/env bash
# HTTP/2 and gRPC through dmsc-l7 against HAProxy and nginx, with the same
# routing (two backends weighted 75:25, h2c to the backends, X-Forwarded-For
# added as dmsc-l7 adds it by default), the same
# backends and the same load (h2load, from a client namespace in the mesh
# cgroup; dmsc-l7 through its VIP, the others at their address):
#   h2    GET of a 3-byte file from nghttpd (nginx: grpc_pass, its only
#         HTTP/2 upstream; HAProxy: proto h2 both sides)
#   grpc  unary calls with a fixed 32-byte message to dmsc-grpcsrv
#         (tests/tools/: C, nghttp2, one thread; h2load posting a gRPC-framed
#         body; the backend echoes it after "NAME:", then the trailers)
# at BENCH_STREAMS concurrent streams (default "4 64": 4 connections x 1
# stream, 4 x 16). Per proxy: requests/s, p50/p99 (h2load's per-request
# log), requests per CPU-second of the proxy's processes (/proc/PID/stat);
# then memory per idle HTTP/2 connection (BENCH_IDLE, default 1000, opened
# and held by tests/lib/h2idle.py: RSS delta / N). Each proxy gets 2
# workers/threads. Everything listens on test-made interfaces in
# 198.18.0.0/15; the proxies run outside the mesh cgroup.
#
# Figures only: nothing passes or fails on speed. Shared machines are noisy:
# compare the rows of one run, as ratios (the load average and the CPU
# time the hypervisor stole, per run and in all, are printed).
# BENCH_SECONDS (default 8) per proxy, kind and round, BENCH_ROUNDS
# (default 2) in alternating order. BENCH_L7: the dmsc-l7 binary (default
# $BUILD/dmsc-l7; another build, to compare two). BENCH_PERF=KIND:STREAMS
# (e.g. grpc:64) or KIND:STREAMS:PROXY (h2:64:haproxy): perf samples dmsc-l7
# (or PROXY) in that run of round 1 and prints its shares by object and its
# top symbols. Each run prints the proxy's share of CPU in user space.
# BENCH_SYSCALLS="KIND:STREAMS..." (e.g. grpc:4): a run of each
# proxy before the rounds, apart from them (tracing slows the proxies), in
# which `perf trace -s` counts its system calls; printed per request, with
# its context switches and the TCP segments sent from the proxies'
# namespace. BENCH_PROXIES: which of "dmsc-l7 haproxy nginx" run.
# BENCH_L7_FASTPATH=on: dmsc-l7 under the mesh cgroup, as dmscd
# --l7-fastpath on runs it (decisions 76, 99). BENCH_SCHED=KIND:STREAMS: `perf sched record` for 2 s of that run of
# round 1, each proxy, and the scheduling delays (wake-up to CPU) of the
# proxy, h2load and the backends. BENCH_LOGS=DIR: h2load's per-request logs
# are copied there. Each run prints the proxy's CPU by thread (how evenly
# its workers share the load), the backend connections it holds halfway,
# and the whole machine's CPU per request (client and backends included).
# Writes $BUILD/bench-h2.json.
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
. "$TOP/scripts/bench-lib.sh"
bench_begin bench-h2 bh2$$ 8
STREAMS_LIST=${BENCH_STREAMS:-4 64}
IDLE=${BENCH_IDLE:-1000}
KINDS=${BENCH_KINDS:-h2 grpc}
PROXIES=${BENCH_PROXIES:-dmsc-l7 haproxy nginx}
L7BIN=${BENCH_L7:-$BUILD/dmsc-l7} # another build of the helper, to compare two
VIP=198.19.0.40
GVIP=198.19.0.41

bench_need bench-h2 h2load nghttpd haproxy nginx
[[ -x $BUILD/tools/dmsc-grpcsrv ]] || { echo "bench-h2: $BUILD/tools/dmsc-grpcsrv is missing (make)"; exit 1; }
PY=/usr/bin/python3 # tests/lib/h2idle.py: the standard library only

suite_cleanup() { exec 7>&- 2>/dev/null; } # h2idle.py's input, if a failure left it open

dmsc_net_hosts c=198.18.0.2/16 n=198.18.0.1/16 b1=198.18.1.2/16 b2=198.18.1.3/16 || exit 1
MESH=$(dmsc_cgroup_make "$P/mesh") || exit 1
# gRPC's core would open dual-stack sockets; the client namespace is IPv4
for k in all default lo; do
	dmsc_net_exec c sysctl -qw "net.ipv6.conf.$k.disable_ipv6=1" || exit 1
done

# backends: nghttpd (h2) on :8080 and dmsc-grpcsrv (gRPC: C, nghttp2, one
# thread, tests/tools/) on :50051 in each
for b in b1:198.18.1.2:v1 b2:198.18.1.3:v2; do
	IFS=: read -r host addr name <<<"$b"
	mkdir -p "$T/www-$name"
	echo "$name" >"$T/www-$name/id"
	ip netns exec "${P}$host" nghttpd --no-tls -n 1 -d "$T/www-$name" --address "$addr" 8080 \
		>"$T/nghttpd-$name.out" 2>&1 &
	PIDS+=($!)
	ip netns exec "${P}$host" "$BUILD/tools/dmsc-grpcsrv" --listen "$addr:50051" --name "$name" \
		--max-seconds 3600 >"$T/grpc-$name.out" 2>&1 &
	PIDS+=($!)
	dmsc_wait_ready "$T/grpc-$name.out" 20 || { cat "$T/grpc-$name.out"; exit 1; }
done
# the gRPC request: one message, uncompressed, 32 bytes
printf '\x00\x00\x00\x00\x20%s' "$(printf 'x%.0s' $(seq 32))" >"$T/grpc-body"

cat >"$T/policy.json" <<EOF
{ "services": [
  { "name": "h2", "vip": "$VIP", "port": 80, "protocol": "http",
    "backends": [
      { "address": "198.18.1.2", "port": 8080, "weight": 75 },
      { "address": "198.18.1.3", "port": 8080, "weight": 25 } ] },
  { "name": "grpc", "vip": "$GVIP", "port": 50051, "protocol": "http",
    "backends": [
      { "address": "198.18.1.2", "port": 50051, "weight": 75 },
      { "address": "198.18.1.3", "port": 50051, "weight": 25 } ] } ] }
EOF
bench_apply "$MESH" "$T/policy.json"

bench_haproxy_conf 2 8000 http 60s <<EOF
frontend h2
	bind 198.18.0.1:15002 proto h2
	default_backend h2
frontend grpc
	bind 198.18.0.1:15012 proto h2
	default_backend grpc
backend h2
	balance random
	server v1 198.18.1.2:8080 weight 75 proto h2
	server v2 198.18.1.3:8080 weight 25 proto h2
backend grpc
	balance random
	server v1 198.18.1.2:50051 weight 75 proto h2
	server v2 198.18.1.3:50051 weight 25 proto h2
EOF
bench_nginx_conf "$T" 20000 <<EOF || exit 1
	http2_max_concurrent_streams 128;
	keepalive_requests 1000000;
	upstream h2 { random; server 198.18.1.2:8080 weight=75; server 198.18.1.3:8080 weight=25; keepalive 64; }
	upstream grpc { random; server 198.18.1.2:50051 weight=75; server 198.18.1.3:50051 weight=25; keepalive 64; }
	grpc_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
	server { listen 198.18.0.1:15003 http2 reuseport; location / { grpc_pass grpc://h2; } }
	server { listen 198.18.0.1:15013 http2 reuseport; location / { grpc_pass grpc://grpc; } }
EOF

# BENCH_L7_FASTPATH=on: dmsc-l7 as dmscd --l7-fastpath on runs it
# (docs/design.md decisions 76 and 99), in a cgroup of its own under the
# mesh cgroup, so that the clients' connections to it are fast-path pairs
# (the backends run outside the mesh: their hop is TCP either way, as for
# the other proxies); by default outside, as dmscd runs it by default
L7CG=()
if [[ ${BENCH_L7_FASTPATH:-off} == on ]]; then
	mkdir -p "$MESH/dmsc-l7" && L7CG=(dmsc_exec_in_cgroup "$MESH/dmsc-l7")
fi
"${L7CG[@]}" ip netns exec "${P}n" "$L7BIN" --listen 198.18.0.1:15001 --policy "$T/policy.json" \
	--workers 2 --no-netns --max-conns-per-client 100000 >"$T/l7.out" 2>"$T/l7.err" &
L7=$!
PIDS+=("$L7")
dmsc_wait_ready "$T/l7.out" 10 || { cat "$T/l7.err"; exit 1; }
bench_start_proxies "${P}n" 15002 15003 15012 15013

in_c() { dmsc_run_in_cgroup "$MESH" ip netns exec "${P}c" "$@"; }
HZ=$(getconf CLK_TCK)

url() { # KIND PROXY
	local port
	case $1-$2 in
	h2-dmsc-l7) echo "http://$VIP/id"; return ;;
	grpc-dmsc-l7) echo "http://$GVIP:50051/bench.Echo/Unary"; return ;;
	h2-haproxy) port=15002 ;; h2-nginx) port=15003 ;;
	grpc-haproxy) port=15012 ;; grpc-nginx) port=15013 ;;
	esac
	if [[ $1 == h2 ]]; then echo "http://198.18.0.1:$port/id"; else echo "http://198.18.0.1:$port/bench.Echo/Unary"; fi
}
pid_of() { case $1 in dmsc-l7) echo "$L7" ;; haproxy) echo "$HAP" ;; nginx) echo "$NGX" ;; esac; }

# TCP segments sent from the proxies' namespace (to clients and backends)
out_segs() { ip netns exec "${P}n" nstat -as TcpOutSegs | awk '$1 == "TcpOutSegs" { print $2 }'; }

# syscalls_per_request PROXY "SWITCHES_BEFORE SWITCHES_AFTER" OUT_SEGS LOG
# TRACE: the calls perf trace counted (all threads), per request of the run
# (its log), the warm-up second counted as requests at the same rate;
# failed ones (EAGAIN mostly) in brackets
syscalls_per_request() {
	awk -v name="$1" -v cs="$2" -v segs="$3" -v secs="$SECS" -v reqs="$(wc -l <"$4")" '
		NF >= 8 && $1 ~ /^[a-z_0-9]+$/ && $2 ~ /^[0-9]+$/ && $3 ~ /^[0-9]+$/ { n[$1] += $2; e[$1] += $3 }
		END {
			r = reqs * (secs + 1) / secs
			if (!r) { print "bench-h2: " name ": no requests, no syscall figures"; exit }
			for (k in n) t += n[k]
			split(cs, x, " ") # voluntary and involuntary, before and after
			printf "bench-h2: %s, per request: TCP segments sent %.2f, context switches %.2f + %.2f involuntary, system calls %.2f:",
				name, segs / r, (x[3] - x[1]) / r, (x[4] - x[2]) / r, t / r
			while (1) { m = ""; for (k in n) if (m == "" || n[k] > n[m]) m = k
				if (m == "" || n[m] / r < 0.01) break
				printf " %s %.2f", m, n[m] / r; if (e[m]) printf " (%.2f failed)", e[m] / r
				delete n[m] }
			printf "\n" }' "$5"
}

# run KIND PROXY ROUND STREAMS
run() {
	local kind=$1 name=$2 round=$3 streams=$4 pid c0 c1 u0 u1 t0 x0 s0 b0 machine out log conns=4 m args=()
	pid=$(pid_of "$name")
	m=$((streams / conns))
	((m < 1)) && m=1
	out=$T/h2load-$kind-$name-$round-$streams.txt
	log=$T/log-$kind-$name-$round-$streams.tsv
	[[ $kind == grpc ]] && args=(-d "$T/grpc-body" -H 'content-type: application/grpc' -H 'te: trailers')
	if ((round == 0)); then
		x0=$(ctx_switches "$pid")
		s0=$(out_segs)
		# the warm-up second and the measured ones (SIGINT: the summary)
		timeout -s INT $((SECS + 1)) perf trace -s -p "$(proc_pids "$pid")" \
			-o "$T/trace-$name.txt" >/dev/null 2>&1 &
		TRACE_PID=$!
	fi
	u0=$(cpu_user_system "$pid")
	c0=$((${u0% *} + ${u0#* }))
	t0=$(thread_ticks "$pid")
	st0=$(steal_ticks)
	b0=$(busy_ticks)
	if [[ ${BENCH_PERF:-} == "$kind:$streams" || ${BENCH_PERF:-} == "$kind:$streams:$name" ]] &&
		[[ ${BENCH_PERF:-} == *:$name || $name == dmsc-l7 ]] && [[ $round == 1 ]] &&
		command -v perf >/dev/null; then
		perf record -q -F 999 -g -o "$T/perf.data" -p "$pid" -- sleep "$SECS" >"$T/perf.out" 2>&1 &
		PERF_PID=$!
	fi
	# the backend connections the proxy holds halfway through the run
	(sleep $((SECS / 2 + 1)) && ip netns exec "${P}n" ss -tnpH state established \
		'( dport = :8080 or dport = :50051 )' | grep -c "\"$name\"" >"$T/upconns") &
	if [[ ${BENCH_SCHED:-} == "$kind:$streams" && $round == 1 ]]; then
		(sleep 2 && perf sched record -q -o "$T/sched-$name.data" -- sleep 2 >/dev/null 2>&1) &
		SCHED_PID=$!
	fi
	in_c timeout $((SECS + 30)) h2load -c "$conns" -m "$m" -D "$SECS" --warm-up-time 1 \
		"${args[@]}" --log-file "$log" "$(url "$kind" "$name")" >"$out" 2>&1
	u1=$(cpu_user_system "$pid")
	c1=$((${u1% *} + ${u1#* }))
	stolen=$(steal_share "$st0")
	# the whole machine's CPU per request (client, proxy, backends; the
	# warm-up second counted as the requests' cost at the same rate)
	machine=$(awk -v t="$(($(busy_ticks) - b0))" -v n="$(wc -l <"$log")" -v hz="$HZ" -v secs="$SECS" \
		'BEGIN { printf "%.1f", (n > 0 ? t / hz * secs / (secs + 1) / n * 1e6 : 0) }')
	if [[ -n ${SCHED_PID:-} ]]; then
		wait "$SCHED_PID"
		SCHED_PID=
		echo "bench-h2: $name, scheduling delays (perf sched latency, 2 s):"
		perf sched latency -i "$T/sched-$name.data" --sort max 2>/dev/null |
			grep -E 'h2load|nghttpd|dmsc-l7|haproxy|nginx|TOTAL' | head -12
	fi
	[[ -n ${BENCH_LOGS:-} ]] && cp "$log" "$BENCH_LOGS/"
	echo "bench-h2: $kind $streams $name round $round: CPU by thread $(thread_split "$t0" "$(thread_ticks "$pid")"), $(user_share "$u0" "$u1") in user space, $(cat "$T/upconns" 2>/dev/null) backend connections, the machine's CPU ${machine} us per request, CPU stolen by the hypervisor $stolen"
	if [[ -n ${TRACE_PID:-} ]]; then
		wait "$TRACE_PID"
		TRACE_PID=
		syscalls_per_request "$name" "$x0 $(ctx_switches "$pid")" "$(($(out_segs) - s0))" \
			"$log" "$T/trace-$name.txt"
		return # traced: not one of the rounds
	fi
	if [[ -n ${PERF_PID:-} ]]; then
		wait "$PERF_PID"
		PERF_PID=
		echo "bench-h2: perf, $name under $kind at $streams streams, shares by object:"
		perf report -q -i "$T/perf.data" --no-children --sort dso --stdio -g none 2>&1 |
			awk 'NF >= 2 && $1 ~ /%$/ { printf " %s %s", $2, $1; if (++n == 6) exit } END { printf "\n" }'
		echo "bench-h2: perf, $name under $kind at $streams streams, top symbols (self):"
		perf report -q -i "$T/perf.data" --no-children --sort dso,symbol --stdio -g none 2>&1 |
			grep -v '^$' | head -30
	fi
	# the warm-up second is in the CPU figure: counted as part of the
	# requests' cost at the same rate (CPU scaled by SECS/(SECS+1))
	sort -n -k3,3 "$log" 2>/dev/null | awk -v kind="$kind" -v name="$name" -v streams="$streams" \
		-v cpu="$((c1 - c0))" -v hz="$HZ" -v secs="$SECS" -v outf="$out" '
		{ d[NR] = $3; if ($2 < 200 || $2 >= 300) bad++ }
		END {
			n = NR
			p50 = n ? d[int(n * 0.50) > 0 ? int(n * 0.50) : 1] / 1000 : 0
			p99 = n ? d[int(n * 0.99) > 0 ? int(n * 0.99) : 1] / 1000 : 0
			cpus = cpu / hz * secs / (secs + 1)
			printf "%s %s %d %d %.1f %.3f %.3f %.2f %.0f %d\n", kind, name, streams, n, n / secs,
				p50, p99, cpus, (cpus > 0 ? n / cpus : 0), bad
		}' >>"$T/results.txt"
}

echo "bench-h2: $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
STEAL0=$(steal_ticks)
for kind in $KINDS; do
	for streams in $STREAMS_LIST; do
		echo "bench-h2: $kind, ${ROUNDS} round(s) of ${SECS}s per proxy, h2load -c4 -m$((streams / 4 > 0 ? streams / 4 : 1)) ($streams streams)"
		if [[ " ${BENCH_SYSCALLS:-} " == *" $kind:$streams "* ]] && command -v perf >/dev/null; then
			for name in $PROXIES; do run "$kind" "$name" 0 "$streams"; done
		fi
		for ((r = 1; r <= ROUNDS; r++)); do
			if ((r % 2)); then order="dmsc-l7 haproxy nginx"; else order="nginx haproxy dmsc-l7"; fi
			for name in $order; do
				[[ " $PROXIES " == *" $name "* ]] && run "$kind" "$name" "$r" "$streams"
			done
		done
		awk -v kind="$kind" -v streams="$streams" '
			$1 != kind || $3 != streams { next }
			{ k = $2; n[k]++; rps[k] += $5; p50[k] += $6; p99[k] += $7; cpu[k] += $8; eff[k] += $9; bad[k] += $10; reqs[k] += $4 }
			END {
				printf "%-9s %7s %10s %9s %9s %10s %15s %7s\n", "proxy", "streams", "req/s", "p50 ms", "p99 ms", "CPU s/run", "req/CPU-second", "non-2xx"
				split("dmsc-l7 haproxy nginx", order, " ")
				for (i = 1; i <= 3; i++) { k = order[i]; if (!n[k]) continue
					printf "%-9s %7d %10.0f %9.3f %9.3f %10.2f %15.0f %7d\n", k, streams, rps[k] / n[k], p50[k] / n[k], p99[k] / n[k], cpu[k] / n[k], eff[k] / n[k], bad[k] }
				for (i = 2; i <= 3; i++) { k = order[i]; if (!n[k] || !eff[k] || !p99[k]) continue
					printf "dmsc-l7 / %-7s: req per CPU-second x%.2f, p99 x%.2f\n", k, eff["dmsc-l7"] / eff[k], (p99["dmsc-l7"] / n["dmsc-l7"]) / (p99[k] / n[k]) }
			}' "$T/results.txt"
	done
done

# memory per idle HTTP/2 connection: IDLE connections opened and held (BENCH_IDLE=0: not measured)
if ((IDLE > 0)); then
	echo "bench-h2: memory per idle HTTP/2 connection ($IDLE connections held, RSS of the proxy's processes)"
	printf '%-9s %12s %12s %14s\n' proxy "RSS before" "RSS after" "kB/connection"
	for name in $PROXIES; do
		pid=$(pid_of "$name")
		case $name in dmsc-l7) addr=$VIP port=80 ;; haproxy) addr=198.18.0.1 port=15002 ;; nginx) addr=198.18.0.1 port=15003 ;; esac
		r0=$(rss_kb "$pid")
		rm -f "$T/idle.in" && mkfifo "$T/idle.in"
		in_c "$PY" "$TOP/tests/lib/h2idle.py" "$addr" "$port" "$IDLE" 120 <"$T/idle.in" >"$T/idle-$name.out" 2>&1 &
		exec 7>"$T/idle.in"
		for i in $(seq 300); do grep -q '^ready' "$T/idle-$name.out" && break; sleep 0.1; done
		r1=$(rss_kb "$pid")
		if grep -q "^ready $IDLE\$" "$T/idle-$name.out"; then
			awk -v name="$name" -v a="$r0" -v b="$r1" -v n="$IDLE" 'BEGIN {
				printf "%-9s %12d %12d %14.1f\n", name, a, b, (b - a) / n
				printf "idle %s %d %d %d\n", name, a, b, n >> "'"$T/results.txt"'" }'
		else
			echo "$name: the $IDLE idle connections were not all taken: $(head -c 200 "$T/idle-$name.out")"
		fi
		exec 7>&-
		wait $! 2>/dev/null
	done
fi
echo "bench-h2: load average after $(cut -d' ' -f1-3 /proc/loadavg); CPU stolen by the hypervisor over the whole run $(steal_share "$STEAL0") (figures of a run with CPU stolen are not a quiet run's)"

mkdir -p "$BUILD"
awk -v secs="$SECS" -v kernel="$(uname -r)" -v steal="$(steal_share "$STEAL0" | tr -d %)" '
	BEGIN { printf "{\"seconds\":%d,\"kernel\":\"%s\",\"steal_percent\":%s,\"runs\":[", secs, kernel, steal == "-" ? "null" : steal }
	$1 == "idle" { idle = idle sprintf("%s{\"proxy\":\"%s\",\"rss_before_kb\":%d,\"rss_after_kb\":%d,\"connections\":%d}", (idle != "" ? "," : ""), $2, $3, $4, $5); next }
	{ printf "%s{\"kind\":\"%s\",\"proxy\":\"%s\",\"streams\":%d,\"requests\":%d,\"rps\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"cpu_s\":%.2f,\"req_per_cpu_s\":%.0f,\"non_2xx\":%d}", (runs++ ? "," : ""), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }
	END { printf "],\"idle\":[%s]}\n", idle }' "$T/results.txt" >"$BUILD/bench-h2.json"
echo "bench-h2: wrote $BUILD/bench-h2.json"
