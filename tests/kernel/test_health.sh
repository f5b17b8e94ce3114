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
dmsc_net_hosts c=198.18.140.2/16 b1=198.18.141.2/16 b2=198.18.141.3/16 || exit 1
MESH=$(dmsc_cgroup_make "$P/mesh") || exit 1

# backend HOST ADDR NAME MODE PORT: starts dmsc-testsrv; its pid in $T/HOST-MODE.pid
backend() {
	dmsc_net_exec "$1" "$SRV" --name "$3" --mode "$4" --listen "$2:$5" \
		--max-seconds 600 >"$T/$1-$4.out" 2>&1 &
	echo $! >"$T/$1-$4.pid"
	dmsc_wait_ready "$T/$1-$4.out" 10
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
    "backends": $(dmsc_json_backends 198.18.141.2:9080 198.18.141.3:9080),
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
policy '{ "passive": { "consecutive_failures": 3, "base_ejection_ms": 600000, "max_ejection_ms": 600000 } }' >"$T/passive.json"
t_check "apply a policy with passive health" "$CTL" apply "$T/passive.json"
load 60 "$T/load1.json" --started-file "$T/started1" --stop-file "$T/stop1" &
LOADPID=$!
t_wait 300 test -e "$T/started1" || t_fail "the load started"
dmsc_net_stop b2
t_wait 60 bash -c "[[ \$('$CTL' stats -o json | jq '.reasons.health_ejected // 0') -ge 1 ]]" ||
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
t_check "the load went on to the other backend" test "$(jq ".backends.v1 // 0" "$T/load1.json")" -gt 0
t_check "connect4 passed over the ejected backend" test "$(reason health_repick)" -gt 0

# 1b. max_ejection_percent 50: of two backends that both refuse, the
# kernel ejects one and keeps the other in.
cat >"$T/capped.json" <<EOF
{ "services": [
  { "name": "capped", "vip": "$VIP", "port": 9090,
    "backends": $(dmsc_json_backends 198.18.141.2:9090 198.18.141.3:9090),
    "health": { "passive": { "consecutive_failures": 3, "base_ejection_ms": 600000,
                             "max_ejection_ms": 600000, "max_ejection_percent": 50 } } } ] }
EOF
t_check "apply a service with max_ejection_percent 50" "$CTL" apply "$T/capped.json"
ej0=$(reason health_ejected)
dmsc_run_in_cgroup "$MESH" dmsc_net_exec c /usr/bin/python3 "$LOAD" "$VIP:9090" \
	--rate 1000 --seconds 0.3 --timeout-ms 1000 >"$T/capped-load.json"
t_check "every connect to the two dead backends failed" \
	test "$(jq .failures "$T/capped-load.json")" -eq "$(jq .attempts "$T/capped-load.json")"
t_eq "the kernel ejected one of them, not both (50 %)" "$(($(reason health_ejected) - ej0))" 1
t_eq "show services: one ejected, one in" \
	"$("$CTL" show services -o json | jq -c '[.services[] | select(.name == "capped") | .backends[].health.state] | sort')" \
	'["ejected","in"]'

# 2. dmscd: the durable part. It runs in host c's network namespace (where
# the backends are reachable), outside the mesh cgroup, and adopts the
# datapath. ratings: passive and tcp probes; pages: http probes alone.
LOG=$T/dmscd.log
POL=$T/policy.json
in_c() { nsenter --net="/run/netns/${P}c" "$@"; }
# dmscd_start POLICY: dmscd in c's namespace, its own pid in DPID (started
# by nsenter, which execs it: a function in the background would leave
# DPID the pid of a subshell, and a TERM to it dmscd running).
dmscd_start() {
	nsenter --net="/run/netns/${P}c" "$DMSCD" --policy "$1" --metrics 127.0.0.1:0 \
		--debounce-ms 100 >>"$LOG" 2>&1 &
	DPID=$!
}
cat >"$POL" <<EOF
{ "services": [
  { "name": "ratings", "vip": "$VIP", "port": 9081,
    "backends": $(dmsc_json_backends 198.18.141.2:9080 198.18.141.3:9080),
    "health": { "passive": { "consecutive_failures": 3, "base_ejection_ms": 600000, "max_ejection_ms": 600000 },
                "active": { "type": "tcp", "interval_ms": 200, "timeout_ms": 150,
                            "unhealthy_threshold": 2, "healthy_threshold": 2 } } },
  { "name": "pages", "vip": "$VIP", "port": 80,
    "backends": $(dmsc_json_backends 198.18.141.2:8080 198.18.141.3:8080),
    "health": { "active": { "type": "http", "path": "/healthz", "interval_ms": 200,
                            "timeout_ms": 150, "unhealthy_threshold": 2,
                            "healthy_threshold": 2 } } } ] }
EOF
backend b2 198.18.141.3 v2 id 9080 || t_fail "b2 restarted"
for h in b1:198.18.141.2:v1 b2:198.18.141.3:v2; do
	IFS=: read -r host addr name <<<"$h"
	backend "$host" "$addr" "$name" http 8080 || t_fail "http backend $host ready"
done
dmscd_start "$POL"
t_wait 60 grep -q '(start)' "$LOG" || t_fail "dmscd applied the policy"
# health SERVICE INDEX FIELD: a backend's field from show services.
health() {
	"$CTL" show services -o json |
		jq -r ".services[] | select(.name == \"$1\") | .backends[$2] | $3"
}
is() { [[ $(health "$1" "$2" "$3") == "$4" ]]; }
export CTL
export -f health is
mono_ns() { python3 -c 'import time; print(time.clock_gettime_ns(time.CLOCK_MONOTONIC))'; }
t_check "dmscd probes the backends: all in" t_wait 30 bash -c \
	'! is ratings 1 .health.probes 0 && is ratings 1 .health.state in && is pages 1 .health.state in'

# load_r SECONDS OUT [ARGS]: as load, on ratings.
load_r() {
	local secs=$1 out=$2
	shift 2
	dmsc_run_in_cgroup "$MESH" dmsc_net_exec c /usr/bin/python3 "$LOAD" "$VIP:9081" \
		--rate 1000 --seconds "$secs" --timeout-ms 1000 "$@" >"$out"
}
load_r 30 "$T/load2.json" --started-file "$T/started2" --stop-file "$T/stop2" &
LOADPID=$!
t_wait 300 test -e "$T/started2" || t_fail "the load on ratings started"
dmsc_net_stop b2
t_check "dmscd takes the ejected backend out of the slot table" t_wait 30 bash -c \
	'is ratings 1 .slots 0 && is ratings 1 .health.state ejected'
t_check "dmscd logs why" grep -qE 'health: ratings 198.18.141.3:9080 out: ejected by the kernel after 3 connect failures' "$LOG"
t_check "show services says why" bash -c \
	"health ratings 1 .health.why | grep -q 'ejected after 3 connect failures in a row until 20'"
t_check "http probes take pages' backend out" t_wait 30 bash -c \
	'is pages 1 .slots 0 && is pages 1 .health.state probe_failed'
t_check "show services names the probe's failure" bash -c \
	"health pages 1 .health.why | grep -q 'probes failed in a row (last: Connection refused)'"
# The maps hold the verdict: another writer's apply keeps the backend out.
t_check "dmscctl apply of the same policy (another writer) keeps it out" bash -c \
	"'$CTL' apply '$POL' >/dev/null && is ratings 1 .slots 0"
after=$(mono_ns)
t_wait 30 bash -c "[[ \$(python3 -c 'import time; print(time.clock_gettime_ns(time.CLOCK_MONOTONIC))') -gt $((after + 1000000000)) ]]"
touch "$T/stop2"
wait "$LOADPID"
LOADPID=
echo "# ratings, b2 killed under load: $(jq -c '{attempts, ok, failures, errors, backends}' "$T/load2.json")"
t_eq "no failure after the ejection (a second and more of load)" \
	"$(jq "[.failure_ns[] | select(. > $after)] | length" "$T/load2.json")" 0
t_range "connects failed before the kernel ejected it" "$(jq .failures "$T/load2.json")" 3 10

# A restarted dmscd adopts the verdicts in the maps: a backend its
# predecessor's probes took out stays out while the new probes fail.
kill -TERM "$DPID"
wait "$DPID"
mark=$(wc -l <"$LOG")
probes0=$(health pages 1 .health.probes)
dmscd_start "$POL"
t_wait 60 bash -c "[[ \$(grep -c '(start)' '$LOG') -ge 2 ]]" || t_fail "dmscd started again"
t_wait 30 bash -c "[[ \$(health pages 1 .health.probes) -ge $((probes0 + 3)) ]]" ||
	t_fail "the new dmscd probes"
t_eq "a restarted dmscd keeps the backend its predecessor's probes took out (not in, then out again)" \
	"$(tail -n +"$((mark + 1))" "$LOG" | grep -cE 'health: pages 198.18.141.3:8080 (back in|out)')" 0
t_eq "...its state too" "$(health pages 1 .health.state)" probe_failed
t_check "...and its slot table still without it" is pages 1 .slots 0

# Restarted: back within one healthy threshold (2 probes of 200 ms; bounded).
backend b2 198.18.141.3 v2 id 9080 || t_fail "b2 restarted (id)"
backend b2 198.18.141.3 v2 http 8080 || t_fail "b2 restarted (http)"
t_check "restarted: ratings' backend is back, its ejection ended" t_wait 10 bash -c \
	'is ratings 1 .slots 64 && is ratings 1 .health.state in'
t_check "restarted: pages' backend is back" t_wait 10 bash -c \
	'is pages 1 .slots 64 && is pages 1 .health.state in'
t_check "dmscd logs the return" grep -q 'health: ratings 198.18.141.3:9080 back in: 2 probes passed in a row after one failed' "$LOG"
load_r 2 "$T/load3.json"
t_check "connections reach the restarted backend again" test "$(jq '.backends.v2 // 0' "$T/load3.json")" -gt 0
t_eq "and none fails" "$(jq .failures "$T/load3.json")" 0

# 3. Every backend down: panic mode keeps them all, logged and counted.
dmsc_net_stop b1
dmsc_net_stop b2
t_check "panic: dmscd says every backend of pages is unhealthy" t_wait 30 \
	grep -q 'health: pages: every backend is unhealthy: all are kept in the slot table (panic mode)' "$LOG"
t_check "panic: both backends keep their slots" t_wait 30 bash -c \
	'is pages 0 .slots 64 && is pages 1 .slots 64'
t_eq "panic: show services says so" \
	"$("$CTL" show services -o json | jq '.services[] | select(.name == "pages") | .health_panic')" true
murl=$(grep -o 'http://[0-9.:]*/metrics' "$LOG" | tail -n 1)
in_c curl -sS --max-time 10 "$murl" >"$T/metrics.txt"
t_eq "panic: the metric says so" \
	"$(awk '/^dmsc_service_health_panic\{service="pages"/ { print $2 }' "$T/metrics.txt")" 1
t_check "the metrics show each backend's state" grep -q \
	"^dmsc_backend_health{service=\"pages\",vip=\"$VIP:80/tcp\",backend=\"198.18.141.3:8080\",state=\"probe_failed\"} 1" "$T/metrics.txt"

# 4. One writer per field set (docs/design.md decision 53): the kernel
# counts refused connects in dmsc_be_health while dmscd writes its probe
# fields of the same backends as fast as it can (128 backends, tcp probes
# every 100 ms, each failing: a write per backend per tick). Before
# decision 53 dmscd read and wrote the kernel's element whole, and a
# failure counted between its read and its write was lost: the kernel's
# count then fell short of the client's refusals. Nothing listens on these
# ports (refused at once); consecutive_failures 1000 keeps the runs short
# of an ejection, which would not change the count anyway.
kill -TERM "$DPID"
wait "$DPID"
bes=$(for ((i = 0; i < 128; i++)); do
	printf ',{ "address": "198.18.141.%d", "port": %d }' $((2 + i % 2)) $((9100 + i))
done)
cat >"$T/stress.json" <<EOF
{ "services": [
  { "name": "stress", "vip": "$VIP", "port": 9099, "backends": [ ${bes#,} ],
    "health": { "passive": { "consecutive_failures": 1000, "base_ejection_ms": 600000, "max_ejection_ms": 600000 },
                "active": { "type": "tcp", "interval_ms": 100, "timeout_ms": 50,
                            "unhealthy_threshold": 100, "healthy_threshold": 1 } } } ] }
EOF
dmscd_start "$T/stress.json"
# sum FIELD: the sum of the stress backends' health FIELD in show services.
sum() {
	"$CTL" show services -o json |
		jq "[.services[] | select(.name == \"stress\") | .backends[].health.$1 // 0] | add // 0"
}
export -f sum
t_check "dmscd probes the 128 backends" t_wait 60 bash -c \
	"[[ \$(\"\$CTL\" show services -o json | jq '[.services[] | select(.name == \"stress\") | .backends[] | select(.health.probes > 0)] | length') == 128 ]]"
fail0=$(sum connect_failures)
probes0=$(sum probes)
STRESSPIDS=()
for i in 1 2; do
	dmsc_run_in_cgroup "$MESH" dmsc_net_exec c /usr/bin/python3 "$LOAD" "$VIP:9099" \
		--rate 100000 --seconds 4 --timeout-ms 1000 >"$T/stress$i.json" &
	STRESSPIDS+=($!)
done
wait "${STRESSPIDS[@]}"
refused=$(jq -s 'map(.errors.ECONNREFUSED // 0) | add' "$T/stress1.json" "$T/stress2.json")
counted=$(($(sum connect_failures) - fail0))
writes=$(($(sum probes) - probes0))
echo "# stress: $refused refused connects in 4 s ($(jq -sc 'map(.errors)' "$T/stress1.json" "$T/stress2.json")), the kernel counted $counted, dmscd wrote $writes probe results meanwhile"
t_eq "every connect failed by a refusal" \
	"$(jq -s 'map(.failures) | add' "$T/stress1.json" "$T/stress2.json")" "$refused"
t_check "dmscd wrote its fields while the kernel counted (>= 1,000 probe results)" test "$writes" -ge 1000
t_eq "the kernel's count of failures is exactly the client's refused connects" "$counted" "$refused"

t_summary
