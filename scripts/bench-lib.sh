# shellcheck shell=bash
# Helpers shared by the benchmarks that measure a proxy's processes. Sources
# tests/lib/kernel.sh (namespaces, cgroups, the common cleanup).
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests/lib" && pwd)/kernel.sh"

# cpu_ticks PID: user+system clock ticks of PID and its children (nginx's
# workers); divide by `getconf CLK_TCK`.
cpu_ticks() {
	local t
	t=$(cpu_user_system "$1")
	echo $((${t% *} + ${t#* }))
}

# cpu_user_system PID: "USER SYSTEM" clock ticks of PID and its children
cpu_user_system() {
	local u=0 s=0 p f
	for p in "$1" $(pgrep -P "$1"); do
		f=$(cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null) || continue
		u=$((u + ${f% *}))
		s=$((s + ${f#* }))
	done
	echo "$u $s"
}

# steal_ticks: "STOLEN ALL", clock ticks of every CPU of this machine, those
# the hypervisor gave to other machines ("steal" in /proc/stat) and all
steal_ticks() {
	awk '/^cpu / { print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit }' /proc/stat
}

# busy_ticks: clock ticks every CPU of this machine spent busy (user, nice,
# system, irq, softirq): a run's cost to the whole machine, the client's and
# the backends' included
busy_ticks() {
	awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat
}

# steal_share "BEFORE": the share of this machine's CPU time the hypervisor
# took since a steal_ticks, e.g. "12%". On a shared host a run with CPU
# stolen is slowed by work no one here sees: its figures are not those of
# a quiet run, and one proxy can lose more than another.
steal_share() {
	local b=($1) a
	a=($(steal_ticks))
	((a[1] > b[1])) && echo "$((100 * (a[0] - b[0]) / (a[1] - b[1])))%" || echo "-"
}

# user_share "BEFORE" "AFTER": the share of user time between two
# cpu_user_system, e.g. "38%"
user_share() {
	local b=($1) a=($2) u s
	u=$((a[0] - b[0]))
	s=$((a[1] - b[1]))
	((u + s > 0)) && echo "$((100 * u / (u + s)))%" || echo "-"
}

# ctx_switches PID: the voluntary and the involuntary context switches of
# every thread of PID and its children (a voluntary one is a wait that
# ended in a wake-up; an involuntary one, the CPU taken by another task)
ctx_switches() {
	local p
	for p in "$1" $(pgrep -P "$1"); do
		cat /proc/"$p"/task/*/status 2>/dev/null
	done | awk '/^voluntary_ctxt_switches/ { v += $2 } /^nonvoluntary_ctxt_switches/ { n += $2 }
		END { print v + 0, n + 0 }'
}

# thread_ticks PID: "TID TICKS" per thread of PID and its children, user +
# system clock ticks (how a proxy's work spreads over its workers)
thread_ticks() {
	local p f
	for p in "$1" $(pgrep -P "$1"); do
		for f in /proc/"$p"/task/*/stat; do
			awk '{ sub(/^.*\) /, ""); print FILENAME, $12 + $13 }' "$f" 2>/dev/null
		done
	done | sed 's|^/proc/[0-9]*/task/\([0-9]*\)/stat|\1|'
}

# thread_split "BEFORE" "AFTER": the busiest threads' shares of the CPU
# between two thread_ticks, e.g. "61% 38% 1%" (those of 1% or more)
thread_split() {
	awk 'NR == FNR { b[$1] = $2; next } { d[$1] = $2 - b[$1]; t += d[$1] }
		END { if (!t) exit
			while (1) { m = ""; for (k in d) if (m == "" || d[k] > d[m]) m = k
				if (m == "" || d[m] * 100 < t) break
				printf "%s%.0f%%", (o++ ? " " : ""), d[m] * 100 / t; delete d[m] }
			printf "\n" }' <(echo "$1") <(echo "$2")
}

# proc_pids PID: PID and its children, comma-separated (perf's -p)
proc_pids() {
	local p out=$1
	for p in $(pgrep -P "$1"); do out+=",$p"; done
	echo "$out"
}

# rss_kb PID: resident kB of PID and its children
rss_kb() {
	local total=0 p v
	for p in "$1" $(pgrep -P "$1"); do
		v=$(awk '/^VmRSS/ { print $2 }' "/proc/$p/status" 2>/dev/null) || continue
		total=$((total + ${v:-0}))
	done
	echo "$total"
}

# to_ms "1.23ms" | "456.00us" | "1.02s": wrk's durations in milliseconds
to_ms() {
	awk -v v="$1" 'BEGIN {
		if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
		else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
		else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 }
		else print "nan" }'
}

# bench_need NAME TOOL...: each TOOL on PATH (/usr/sbin added: haproxy and
# nginx live there), or NAME says which is missing and the benchmark ends.
bench_need() {
	local name=$1 tool
	shift
	PATH=$PATH:/usr/sbin
	for tool in "$@"; do
		command -v "$tool" >/dev/null && continue
		echo "$name: $tool is missing (scripts/install-deps.sh --bench)"
		exit 1
	done
}

# bench_haproxy_head THREADS MAXCONN MODE TIMEOUT [LINE...]: the global and
# defaults sections of a haproxy.cfg on stdout (LINEs join global); in mode
# http idle backend connections are reused. The proxies follow it.
bench_haproxy_head() {
	local threads=$1 maxconn=$2 mode=$3 timeout=$4 line
	shift 4
	printf 'global\n\tnbthread %s\n\tmaxconn %s\n' "$threads" "$maxconn"
	for line in "$@"; do printf '\t%s\n' "$line"; done
	printf 'defaults\n\tmode %s\n' "$mode"
	printf '\ttimeout %s %s\n' connect 5s client "$timeout" server "$timeout"
	# in http mode it adds X-Forwarded-For, as dmsc-l7 does by default
	# (--forwarded xff): the same work per request
	[[ $mode == http ]] && printf '\thttp-reuse safe\n\toption forwardfor\n'
	return 0
}

# bench_haproxy_conf THREADS MAXCONN MODE TIMEOUT < PROXIES: writes
# $T/haproxy.cfg, bench_haproxy_head's sections and then the proxies
# (frontends, backends) read from stdin.
bench_haproxy_conf() {
	{
		bench_haproxy_head "$@"
		cat
	} >"$T/haproxy.cfg"
}

# bench_apply CGROUP POLICY: dmsc installed on CGROUP and POLICY applied;
# either failing ends the benchmark.
bench_apply() {
	"$CTL" install --cgroup "$1" >/dev/null || exit 1
	"$CTL" apply "$2" >/dev/null || exit 1
}

# bench_nginx_conf DIR WORKER_CONNECTIONS < HTTP-LINES: writes DIR/nginx.conf,
# two workers in the foreground with their pid, error log and temporary
# files under DIR, no access log, and the lines read from stdin (upstreams
# and servers) inside its http block.
bench_nginx_conf() {
	local dir=$1 conns=$2 kind
	mkdir -p "$dir/nginx" || return 1
	{
		printf 'worker_processes 2;\ndaemon off;\npid %s/nginx.pid;\n' "$dir"
		printf 'error_log %s/nginx.err warn;\n' "$dir"
		printf 'events { worker_connections %s; }\nhttp {\n\taccess_log off;\n' "$conns"
		for kind in client_body proxy fastcgi uwsgi scgi; do
			printf '\t%s_temp_path %s/nginx/%s;\n' "$kind" "$dir" "${kind#client_}"
		done
		cat
		echo "}"
	} >"$dir/nginx.conf"
}

# bench_start_proxies NETNS PORT...: HAProxy ($T/haproxy.cfg) and nginx
# ($T/nginx.conf) in NETNS, their pids in HAP and NGX (and PIDS); waits (at
# most 5 s a port) until each PORT listens there. Either proxy gone: it
# prints what they said and the benchmark ends.
bench_start_proxies() {
	local ns=$1 port i p
	shift
	ip netns exec "$ns" haproxy -db -f "$T/haproxy.cfg" >"$T/haproxy.out" 2>&1 &
	HAP=$!
	ip netns exec "$ns" nginx -c "$T/nginx.conf" >"$T/nginx.out" 2>&1 &
	NGX=$!
	PIDS+=("$HAP" "$NGX")
	for port in "$@"; do
		for ((i = 0; i < 50; i++)); do
			ip netns exec "$ns" ss -Htln "sport = :$port" | grep -q . && break
			sleep 0.1
		done
	done
	for p in "$HAP" "$NGX"; do
		kill -0 "$p" 2>/dev/null && continue
		echo "a proxy did not start:"
		cat "$T/haproxy.out" "$T/nginx.out" "$T/nginx.err" 2>/dev/null
		exit 1
	done
}

# bench_stop_pids: SIGTERM to each of PIDS, then up to 10 s each for it to
# be gone.
bench_stop_pids() {
	local p
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do t_wait 10 bash -c "! kill -0 $p 2>/dev/null"; done
}

# bench_begin NAME PREFIX SECONDS: the start every proxy benchmark shares.
# Not root: NAME says it is skipped and the benchmark ends (0). Else BUILD
# defaults to $TOP/build and CTL is its dmscctl; SECS is BENCH_SECONDS or
# SECONDS, ROUNDS BENCH_ROUNDS or 2; T is a new temporary directory with a
# BPF filesystem of the benchmark's own (DMSC_PIN_DIR in it), P=PREFIX
# names its namespaces (dmsc_net_init); PIDS (what the cleanup stops) is
# empty. At the exit, also on Ctrl-C: bench_stop_pids, then
# dmsc_suite_cleanup (a suite_cleanup of the benchmark's first).
bench_begin() {
	if [[ $(id -u) -ne 0 ]]; then
		echo "$1: needs root (BPF, namespaces); skipped"
		exit 0
	fi
	BUILD=${BUILD:-$TOP/build}
	CTL=$BUILD/dmscctl
	SECS=${BENCH_SECONDS:-$3}
	ROUNDS=${BENCH_ROUNDS:-2}
	P=$2
	PIDS=()
	T=$(mktemp -d "${TMPDIR:-/tmp}/dmsc-$1.XXXXXX") || exit 1
	trap 'bench_stop_pids; dmsc_suite_cleanup' EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	mkdir -p "$T/bpffs" && mount -t bpf bpf "$T/bpffs" || exit 1
	export DMSC_PIN_DIR=$T/bpffs/dmsc
	dmsc_net_init "$P" || exit 1
}
