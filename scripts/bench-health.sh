#!/usr/bin/env bash
# Passive health: how many connections fail when a backend dies under a
# steady load, and for how long, before the kernel ejects it.
#
# A client in the mesh cgroup opens 1,000 connections/s through a VIP (one
# at a time: tests/tools/health-load.py) to two backends; after a second
# the process behind one is killed (its port then refuses). For each of
# ROUNDS rounds it prints the connects that failed and the time from the
# first failure to the last (the goal: under 50 ms of failures at 1,000
# connections/s); then the median. The service has passive health with
# the default consecutive_failures (5), or FAILURES. No dmscd: this is the
# kernel's part (bpf/sock_lb/health.bpf.c). Never fails on speed; the exit
# code only says whether it ran.
#
# Environment: ROUNDS (5), FAILURES (5), RATE (1000), BIN (build). Without
# root it is skipped (exit 77).
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-5}
FAILURES=${FAILURES:-5}
RATE=${RATE:-1000}
VIP=198.19.142.10
LOADPID=
# The kernel suites' start: root (else skipped), a BPF filesystem of its
# own, namespaces and cgroups removed by a trap (suite_cleanup first).
suite_cleanup() {
	[[ -n $LOADPID ]] && kill -KILL "$LOADPID" 2>/dev/null
}
. "$TOP/tests/lib/kernel.sh"
dmsc_suite_begin bench-health bhl$$
dmsc_net_hosts c=198.18.142.2/16 b1=198.18.143.2/16 b2=198.18.143.3/16 || exit 1
MESH=$(dmsc_cgroup_make "$P/mesh") || exit 1
"$CTL" install --cgroup "$MESH" >/dev/null || exit 1

start() { # HOST ADDR NAME
	dmsc_testsrv "$1" "$3" id "$2:9080" 600 "$T/$1.out"
	dmsc_wait_ready "$T/$1.out" 10
}
kill_host() {
	local pid
	for pid in $(ip netns pids "$P$1"); do kill -KILL "$pid" 2>/dev/null; done
	for ((i = 0; i < 100; i++)); do
		[[ -z $(ip netns pids "$P$1") ]] && return 0
		sleep 0.05
	done
}
start b1 198.18.143.2 v1 || exit 1
echo "bench-health: $RATE connections/s through a VIP, one backend killed; consecutive_failures $FAILURES; $(uname -r)"
printf '%-6s %10s %16s %10s\n' round failures "failing for ms" attempts
spans=()
fails=()
for ((r = 1; r <= ROUNDS; r++)); do
	start b2 198.18.143.3 v2 || exit 1
	# A new service each round: a fresh backend id, no ejection left over.
	printf '{ "services": [ { "name": "bench%d", "vip": "%s", "port": %d, "backends": [
	  { "address": "198.18.143.2", "port": 9080 }, { "address": "198.18.143.3", "port": 9080 } ],
	  "health": { "passive": { "consecutive_failures": %d } } } ] }\n' \
		"$r" "$VIP" $((9000 + r)) "$FAILURES" >"$T/p.json"
	"$CTL" apply "$T/p.json" >/dev/null || exit 1
	rm -f "$T/started" "$T/stop"
	dmsc_run_in_cgroup "$MESH" dmsc_net_exec c /usr/bin/python3 "$TOP/tests/tools/health-load.py" \
		"$VIP:$((9000 + r))" --rate "$RATE" --seconds 60 --started-file "$T/started" \
		--stop-file "$T/stop" >"$T/load.json" &
	LOADPID=$!
	for ((i = 0; i < 600; i++)); do
		[[ -e $T/started ]] && break
		sleep 0.1
	done
	sleep 1 # a steady load before the kill: part of the figure's setting, not a wait for a condition
	kill_host b2
	sleep 1
	touch "$T/stop"
	wait "$LOADPID"
	LOADPID=
	f=$(jq '.errors.ECONNREFUSED // 0' "$T/load.json")
	s=$(jq '(.last_failure_ns - .first_failure_ns) / 1e6' "$T/load.json")
	printf '%-6s %10s %16.2f %10s\n' "$r" "$f" "$s" "$(jq .attempts "$T/load.json")"
	fails+=("$f")
	spans+=("$s")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
printf 'median %10s %16.2f   (goal: under 50 ms of failures at 1,000 connections/s)\n' \
	"$(median "${fails[@]}")" "$(median "${spans[@]}")"
