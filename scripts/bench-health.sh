#!/usr/bin/env bash
# Passive health: how many connections fail when a backend dies under a
# steady load, and for how long, before the kernel ejects it.
#
# A client in the mesh cgroup opens 1,000 connections/s through a VIP (one
# at a time: tests/tools/health-load.py) to two backends; after a second
# the process behind one is killed (its port then refuses). For each of
# ROUNDS rounds it prints the connects that failed before the backend left
# the rotation, the time from the first failure to the last (the goal:
# under 50 ms of failures at 1,000 connections/s) and the failures after
# it (goal 0); then the medians. The service has passive health with the
# default consecutive_failures (5), or FAILURES: the kernel's part
# (bpf/sock_lb/health.bpf.c), no dmscd. Then, with dmscd and tcp probes
# every 200 ms (healthy_threshold 2), the killed backend is restarted
# under the load: the time until the load reaches it again (goal: within
# one healthy threshold, 2 probes). Never fails on speed; the exit code
# only says whether it ran.
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
DPID=
# The kernel suites' start: root (else skipped), a BPF filesystem of its
# own, namespaces and cgroups removed by a trap (suite_cleanup first).
suite_cleanup() {
	[[ -n $LOADPID ]] && kill -KILL "$LOADPID" 2>/dev/null
	[[ -n $DPID ]] && kill -TERM "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
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
# load_start PORT OUT: the load on VIP:PORT, in the background, once it
# made its first connection; load_stop ends it.
load_start() {
	rm -f "$T/started" "$T/stop"
	dmsc_run_in_cgroup "$MESH" dmsc_net_exec c /usr/bin/python3 "$TOP/tests/tools/health-load.py" \
		"$VIP:$1" --rate "$RATE" --seconds 60 --started-file "$T/started" \
		--stop-file "$T/stop" >"$2" &
	LOADPID=$!
	for ((i = 0; i < 600; i++)); do
		[[ -e $T/started ]] && break
		sleep 0.1
	done
}
load_stop() {
	touch "$T/stop"
	wait "$LOADPID"
	LOADPID=
}
start b1 198.18.143.2 v1 || exit 1
echo "bench-health: $RATE connections/s through a VIP, one backend killed; consecutive_failures $FAILURES; $(uname -r)"
printf '%-6s %10s %16s %10s %10s\n' round failures "failing for ms" after attempts
spans=()
fails=()
afters=()
for ((r = 1; r <= ROUNDS; r++)); do
	start b2 198.18.143.3 v2 || exit 1
	# A new service each round: a fresh backend id, no ejection left over.
	printf '{ "services": [ { "name": "bench%d", "vip": "%s", "port": %d, "backends": [
	  { "address": "198.18.143.2", "port": 9080 }, { "address": "198.18.143.3", "port": 9080 } ],
	  "health": { "passive": { "consecutive_failures": %d } } } ] }\n' \
		"$r" "$VIP" $((9000 + r)) "$FAILURES" >"$T/p.json"
	"$CTL" apply "$T/p.json" >/dev/null || exit 1
	load_start $((9000 + r)) "$T/load.json"
	sleep 1 # a steady load before the kill: part of the figure's setting, not a wait for a condition
	dmsc_net_stop b2
	sleep 1
	load_stop
	# One connect at a time: the FAILURES-th refused connect is the one
	# that ejects (a connection accepted just before the kill may fail
	# first, with ECONNRESET); every failure past it is one after.
	e=$(jq --argjson n "$FAILURES" '[.failure_errs | to_entries[] |
		select(.value == "ECONNREFUSED") | .key][$n - 1] // (.failure_errs | length) - 1' "$T/load.json")
	f=$((e + 1))
	a=$(jq --argjson e "$e" '.failure_errs | length - $e - 1' "$T/load.json")
	s=$(jq --argjson e "$e" 'if $e < 0 then 0 else (.failure_ns[$e] - .failure_ns[0]) / 1e6 end' "$T/load.json")
	printf '%-6s %10s %16.2f %10s %10s\n' "$r" "$f" "$s" "$a" "$(jq .attempts "$T/load.json")"
	fails+=("$f")
	spans+=("$s")
	afters+=("$a")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
printf 'median %10s %16.2f %10s   (goal: under 50 ms of failures at 1,000 connections/s, 0 after)\n' \
	"$(median "${fails[@]}")" "$(median "${spans[@]}")" "$(median "${afters[@]}")"


# The restart: dmscd (in the client's namespace, outside the mesh cgroup)
# with tcp probes every 200 ms; the backend killed under the load, then
# started again under a second load: the time until that load reaches it.
mono_ns() { python3 -c 'import time; print(time.clock_gettime_ns(time.CLOCK_MONOTONIC))'; }
state() { "$CTL" show services -o json | jq -r '.services[] | select(.name == "benchr") | .backends[1].health.state'; }
wait_state() { # STATE: at most 10 s
	for ((i = 0; i < 200; i++)); do
		[[ $(state) == "$1" ]] && return 0
		sleep 0.05
	done
	return 1
}
start b2 198.18.143.3 v2 || exit 1
cat >"$T/r.json" <<JSON
{ "services": [ { "name": "benchr", "vip": "$VIP", "port": 9100, "backends": [
  { "address": "198.18.143.2", "port": 9080 }, { "address": "198.18.143.3", "port": 9080 } ],
  "health": { "passive": { "consecutive_failures": $FAILURES, "base_ejection_ms": 600000,
                           "max_ejection_ms": 600000 },
              "active": { "type": "tcp", "interval_ms": 200, "timeout_ms": 150,
                          "unhealthy_threshold": 2, "healthy_threshold": 2 } } } ] }
JSON
nsenter --net="/run/netns/${P}c" "$BIN/dmscd" --policy "$T/r.json" --metrics 127.0.0.1:0 \
	--debounce-ms 100 >"$T/dmscd.log" 2>&1 &
DPID=$!
for ((i = 0; i < 600; i++)); do
	grep -q '(start)' "$T/dmscd.log" && break
	sleep 0.1
done
wait_state in || { echo "bench-health: dmscd did not probe the backends" >&2; exit 1; }
load_start 9100 "$T/load-r1.json"
sleep 1 # a steady load before the kill, as above
dmsc_net_stop b2
wait_state ejected || echo "bench-health: the killed backend was not ejected" >&2
load_stop
load_start 9100 "$T/load-r2.json"
t0=$(mono_ns)
start b2 198.18.143.3 v2 || exit 1
wait_state in || echo "bench-health: the restarted backend did not come back within 10 s" >&2
sleep 0.5 # some load after its return, to see it served
load_stop
back=$(jq --argjson t "$t0" '(.first_ok_ns.v2 // 0) as $v | if $v > $t then ($v - $t) / 1e6 else -1 end' \
	"$T/load-r2.json")
printf 'restart: back in rotation %.0f ms after the backend was started (goal: within one healthy threshold, 2 probes 200 ms apart); %s failures meanwhile; killed: %s failed before its ejection\n' \
	"$back" "$(jq .failures "$T/load-r2.json")" "$(jq .failures "$T/load-r1.json")"
