#!/usr/bin/env bash
# Backend health on the running kernel (docs/design.md decision 28): a
# backend killed under a steady connection load leaves the rotation by the
# kernel's passive ejection; dmscd keeps it out while its probes fail and
# brings it back once they pass; every backend down is panic mode; tcp and
# http probes alone take a backend out and back.
set -u
. "$(cd "$(dirname "$0")/../lib" && pwd)/kernel.sh"
dmsc_suite_begin health dhl$$
VIP=198.19.140.10
LOAD=$TOP/tests/tools/health-load.py
dmsc_net_host c 198.18.140.2/16 || exit 1
dmsc_net_host b1 198.18.141.2/16 || exit 1
dmsc_net_host b2 198.18.141.3/16 || exit 1
MESH=$(dmsc_cgroup_make "$P/mesh") || exit 1

# backend HOST ADDR NAME MODE PORT: starts dmsc-testsrv; its pid in $T/HOST-MODE.pid
backend() {
	dmsc_net_exec "$1" "$SRV" --name "$3" --mode "$4" --listen "$2:$5" \
		--max-seconds 600 >"$T/$1-$4.out" 2>&1 &
	echo $! >"$T/$1-$4.pid"
	dmsc_wait_ready "$T/$1-$4.out" 10
}
# stop_backend HOST: kills every process of HOST (its servers), at once.
stop_backend() {
	local pid
	for pid in $(ip netns pids "$P$1"); do
		kill -KILL "$pid" 2>/dev/null
	done
	t_wait 10 bash -c "[[ -z \$(ip netns pids '$P$1') ]]"
}
for h in b1:198.18.141.2:v1 b2:198.18.141.3:v2; do
	IFS=: read -r host addr name <<<"$h"
	backend "$host" "$addr" "$name" id 9080 || { t_fail "backend $host ready"; t_summary; exit 1; }
done

# policy HEALTH_JSON > file: two equal backends with that health object.
policy() {
	cat <<EOF
{ "services": [
  { "name": "reviews", "vip": "$VIP", "port": 9080,
    "backends": [
      { "address": "198.18.141.2", "port": 9080 },
      { "address": "198.18.141.3", "port": 9080 } ],
    "health": $1 } ] }
EOF
}

# load SECONDS OUT [ARGS]: 1,000 connections/s through the VIP from the mesh.
load() {
	local secs=$1 out=$2
	shift 2
	dmsc_run_in_cgroup "$MESH" dmsc_net_exec c /usr/bin/python3 "$LOAD" "$VIP:9080" \
		--rate 1000 --seconds "$secs" --timeout-ms 1000 "$@" >"$out"
}
reason() {
	"$CTL" stats -o json | jq ".reasons.$1 // 0"
}

t_check "install on the test cgroup" "$CTL" install --cgroup "$MESH"

# 1. The kernel alone (no dmscd): passive ejection after 3 refused connects.
policy '{ "passive": { "consecutive_failures": 3, "base_ejection_ms": 60000 } }' >"$T/passive.json"
t_check "apply a policy with passive health" "$CTL" apply "$T/passive.json"
load 10 "$T/load1.json" --started-file "$T/started1" --stop-file "$T/stop1" &
LOADPID=$!
t_wait 20 test -e "$T/started1" || t_fail "the load started"
stop_backend b2
t_wait 20 bash -c "[[ \$('$CTL' stats -o json | jq '.reasons.health_ejected // 0') -ge 1 ]]" ||
	t_fail "the kernel ejects the killed backend"
# A second of load after the ejection: none of it may fail.
ejected_at=$(date +%s.%N)
t_wait 20 bash -c "awk -v t=$ejected_at -v n=\$(date +%s.%N) 'BEGIN { exit !(n - t >= 1) }'"
touch "$T/stop1"
wait "$LOADPID"
failures=$(jq .failures "$T/load1.json")
span=$(jq '((.last_failure_ns - .first_failure_ns) / 1e6 * 10 | floor) / 10' "$T/load1.json")
echo "# killed backend under 1000 conn/s: $failures failed connects over $span ms, then ejected ($(jq -c '{attempts, ok, errors, backends}' "$T/load1.json"))"
t_range "connects failed before the kernel ejected the backend (3 in a row, a few late)" "$failures" 3 10
# One connect at a time: the third refusal ejects the backend before the
# next connect() picks (a connection accepted just before the kill may end
# in ECONNRESET: not a connect failure).
t_eq "the third refused connect ejected it: no fourth" "$(jq '.errors.ECONNREFUSED' "$T/load1.json")" 3
t_check "the load went on to the other backend" test "$(jq '.backends.v1 // 0' "$T/load1.json")" -gt 500
t_check "connect4 passed over the ejected backend" test "$(reason health_repick)" -gt 0

t_summary
