# shellcheck shell=bash
# A private etcd for the kernel suites, the benchmarks and the demo: on
# loopback, free ports, a data directory of the caller's own (never the
# packaged service). Sourced; needs ss, curl and etcd.

# free_port: a TCP port from 20000-49999 that nothing listens on.
free_port() {
	local p i
	for ((i = 0; i < 50; i++)); do
		p=$((20000 + RANDOM % 30000))
		ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return 0; }
	done
	return 1
}

# etcd_run NAME DATA-DIR CLIENT-URL PEER-PORT LOG [ETCD-ARG...]: one
# single-member etcd in the background (its log appended to LOG); its pid
# in ETCD_PID.
etcd_run() {
	local name=$1 data=$2 url=$3 peer=http://127.0.0.1:$4 log=$5
	shift 5
	etcd --name "$name" --data-dir "$data" --listen-client-urls "$url" \
		--advertise-client-urls "$url" --listen-peer-urls "$peer" \
		--initial-advertise-peer-urls "$peer" --initial-cluster "$name=$peer" "$@" \
		>>"$log" 2>&1 &
	ETCD_PID=$!
}

# etcd_healthy URL SECONDS [CURL-ARG...]: polls URL/health every 100 ms
# until it answers, for SECONDS at most.
etcd_healthy() {
	local url=$1 i n=$(($2 * 10))
	shift 2
	for ((i = 0; i < n; i++)); do
		curl -sf --max-time 1 "$@" "$url/health" -o /dev/null && return 0
		sleep 0.1
	done
	return 1
}
