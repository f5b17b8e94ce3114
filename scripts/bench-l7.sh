#!/usr/bin/env bash
# dmsc-l7 against HAProxy (HTTP mode) and nginx (reverse proxy), with the same
# routing (/v2/ -> v2; /api/ -> v1:v2 weighted 75:25, keep-alive to the
# backends, X-Forwarded-For added as dmsc-l7 adds it by default), the same
# two backends (dmsc-testsrv) and the same load (wrk,
# from a client namespace, in the mesh cgroup; dmsc-l7 through its VIP, the
# others at their address). Each proxy gets 2 workers/threads.
#
# Prints a table and writes $BUILD/bench-l7.json. Figures only: nothing here
# passes or fails on speed. Machines are shared and noisy: compare the rows
# of one run, as ratios. BENCH_SECONDS (default 10) per proxy and round,
# BENCH_ROUNDS (default 2) rounds in alternating order, BENCH_CONNS: the
# wrk connection counts to run, default "4 32" (4: latency with the machine
# mostly idle; 32: throughput and CPU cost under load).
# BENCH_L7_FASTPATH=on: dmsc-l7 under the mesh cgroup (dmscd
# --l7-fastpath on), by default outside it, as dmscd runs it.
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
. "$TOP/scripts/bench-lib.sh"
bench_begin bench-l7 bl7$$ 10
CONNS_LIST=${BENCH_CONNS:-4 32}
VIP=198.19.0.30

bench_need bench-l7 wrk haproxy nginx

dmsc_net_hosts c=198.18.0.2/16 n=198.18.0.1/16 b1=198.18.1.2/16 b2=198.18.1.3/16 || exit 1
MESH=$(dmsc_cgroup_make "$P/mesh") || exit 1

for b in b1:198.18.1.2:v1 b2:198.18.1.3:v2; do
	IFS=: read -r host addr name <<<"$b"
	ip netns exec "${P}$host" "$BUILD/tools/dmsc-testsrv" --name "$name" --mode http \
		--listen "$addr:8080" --max-seconds 3600 >"$T/$name.out" 2>&1 &
	PIDS+=($!)
	dmsc_wait_ready "$T/$name.out" 10 || exit 1
done

cat >"$T/policy.json" <<EOF
{ "services": [ { "name": "bench", "vip": "$VIP", "port": 80, "protocol": "http",
  "backends": [
    { "address": "198.18.1.2", "port": 8080, "weight": 75, "labels": { "version": "v1" } },
    { "address": "198.18.1.3", "port": 8080, "weight": 25, "labels": { "version": "v2" } } ],
  "routes": [
    { "match": { "path_prefix": "/v2/" }, "backends": { "version": "v2" } },
    { "match": { "path_prefix": "/api/" } } ] } ] }
EOF
bench_apply "$MESH" "$T/policy.json"

bench_haproxy_conf 2 8000 http 30s <<EOF
frontend f
	bind 198.18.0.1:15002
	acl v2 path_beg /v2/
	use_backend v2 if v2
	default_backend main
backend main
	balance random
	server v1 198.18.1.2:8080 weight 75
	server v2 198.18.1.3:8080 weight 25
backend v2
	server v2 198.18.1.3:8080
EOF
bench_nginx_conf "$T" 8192 <<EOF || exit 1
	upstream main { server 198.18.1.2:8080 weight=75; server 198.18.1.3:8080 weight=25; keepalive 64; }
	upstream v2 { server 198.18.1.3:8080; keepalive 64; }
	server {
		listen 198.18.0.1:15003 reuseport;
		location /v2/ { proxy_pass http://v2; proxy_http_version 1.1; proxy_set_header Connection "";
			proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; }
		location /api/ { proxy_pass http://main; proxy_http_version 1.1; proxy_set_header Connection "";
			proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; }
	}
EOF

# BENCH_L7_FASTPATH=on: dmsc-l7 as dmscd --l7-fastpath on runs it
# (docs/design.md decision 99), in a cgroup of its own under the mesh
# cgroup, its clients' connections fast-path pairs; by default outside
L7CG=()
if [[ ${BENCH_L7_FASTPATH:-off} == on ]]; then
	mkdir -p "$MESH/dmsc-l7" && L7CG=(dmsc_exec_in_cgroup "$MESH/dmsc-l7")
fi
"${L7CG[@]}" ip netns exec "${P}n" "$BUILD/dmsc-l7" --listen 198.18.0.1:15001 --policy "$T/policy.json" \
	--workers 2 >"$T/l7.out" 2>"$T/l7.err" &
L7=$!
PIDS+=("$L7")
dmsc_wait_ready "$T/l7.out" 10 || { cat "$T/l7.err"; exit 1; }
bench_start_proxies "${P}n" 15002 15003

HZ=$(getconf CLK_TCK)

# run NAME URL PID ROUND  (CONNS: the connection count)
run() {
	local name=$1 url=$2 pid=$3 round=$4 c0 c1 out
	out=$T/wrk-$name-$round-$CONNS.txt
	# warm-up: connections and pools, not measured
	dmsc_run_in_cgroup "$MESH" ip netns exec "${P}c" wrk -t 2 -c "$CONNS" -d 2s "$url" >/dev/null 2>&1
	c0=$(cpu_ticks "$pid")
	dmsc_run_in_cgroup "$MESH" ip netns exec "${P}c" timeout $((SECS + 30)) \
		wrk -t 2 -c "$CONNS" -d "${SECS}s" --latency "$url" >"$out" 2>&1
	c1=$(cpu_ticks "$pid")
	awk -v name="$name" -v cpu="$((c1 - c0))" -v hz="$HZ" -v secs="$SECS" -v conns="$CONNS" \
		-v p50="$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")" \
		-v p99="$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")" '
		/requests in/ { reqs = $1 }
		/Non-2xx/ { non2xx = $NF }
		/Socket errors/ { errs = $0 }
		END {
			cpus = cpu / hz
			printf "%s %d %.1f %.3f %.3f %.2f %.0f %d %d\n", name, reqs, reqs / secs, p50, p99, cpus,
				(cpus > 0 ? reqs / cpus : 0), non2xx + (errs != "" ? 1 : 0), conns
		}' "$out" >>"$T/results.txt"
}

for CONNS in $CONNS_LIST; do
	echo "bench-l7: ${ROUNDS} round(s) of ${SECS}s per proxy, wrk -t2 -c${CONNS}, GET /api/x (weighted 75:25)"
	for ((r = 1; r <= ROUNDS; r++)); do
		if ((r % 2)); then order="dmsc-l7 haproxy nginx"; else order="nginx haproxy dmsc-l7"; fi
		for name in $order; do
			case $name in
			dmsc-l7) run dmsc-l7 "http://$VIP/api/x" "$L7" "$r" ;;
			haproxy) run haproxy "http://198.18.0.1:15002/api/x" "$HAP" "$r" ;;
			nginx) run nginx "http://198.18.0.1:15003/api/x" "$NGX" "$r" ;;
			esac
		done
	done
	# average the rounds per proxy
	awk -v conns="$CONNS" '
		$9 != conns { next }
		{ n[$1]++; req[$1] += $2; rps[$1] += $3; p50[$1] += $4; p99[$1] += $5; cpu[$1] += $6; eff[$1] += $7; bad[$1] += $8 }
		END {
			printf "%-9s %6s %10s %9s %9s %12s %16s %7s\n", "proxy", "conns", "req/s", "p50 ms", "p99 ms", "CPU s/run", "req/CPU-second", "errors"
			split("dmsc-l7 haproxy nginx", order, " ")
			for (i = 1; i <= 3; i++) { k = order[i]; if (!n[k]) continue
				printf "%-9s %6d %10.0f %9.3f %9.3f %12.2f %16.0f %7d\n", k, conns, rps[k] / n[k], p50[k] / n[k], p99[k] / n[k], cpu[k] / n[k], eff[k] / n[k], bad[k] }
			if (n["haproxy"] && eff["haproxy"] > 0)
				printf "dmsc-l7 / haproxy: req per CPU-second x%.2f, p99 x%.2f\n", eff["dmsc-l7"] / eff["haproxy"], (p99["dmsc-l7"] / n["dmsc-l7"]) / (p99["haproxy"] / n["haproxy"])
			if (n["nginx"] && eff["nginx"] > 0)
				printf "dmsc-l7 / nginx:   req per CPU-second x%.2f, p99 x%.2f\n", eff["dmsc-l7"] / eff["nginx"], (p99["dmsc-l7"] / n["dmsc-l7"]) / (p99["nginx"] / n["nginx"])
		}' "$T/results.txt"
done

mkdir -p "$BUILD"
awk -v secs="$SECS" '
	BEGIN { printf "{\"seconds\":%d,\"runs\":[", secs }
	{ printf "%s{\"proxy\":\"%s\",\"connections\":%d,\"requests\":%d,\"rps\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"cpu_s\":%.2f,\"req_per_cpu_s\":%.0f,\"errors\":%d}", (NR > 1 ? "," : ""), $1, $9, $2, $3, $4, $5, $6, $7, $8 }
	END { print "]}" }' "$T/results.txt" >"$BUILD/bench-l7.json"
echo "bench-l7: wrote $BUILD/bench-l7.json"
