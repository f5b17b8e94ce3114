#!/usr/bin/env bash
# dmscd, the agent, on the running kernel: restarts (SIGTERM and SIGKILL)
# and program replacement under load without a failed connection, backend
# set switches that no connect() sees half-done, incremental applies that
# write a handful of entries in a 10,000-service policy, an invalid policy
# file that changes nothing, directory policies, serialisation with
# dmscctl, the capacity check, and the metrics endpoint checked strictly.
set -u
. "$(cd "$(dirname "$0")/../lib" && pwd)/kernel.sh"
LOADPIDS=()
# Stops dmscd and the load before the common cleanup (kernel.sh).
suite_cleanup() { dmsc_stop KILL "${LOADPIDS[@]}" $DPID; }
dmsc_suite_begin agent dag$$
PROMCHECK=$TOP/tests/lib/promcheck.awk
VIP=198.19.0.10
POL=$T/policy.json
LOG=$T/dmscd.log
dmsc_net_hosts c=198.18.0.2/16 b1=198.18.1.2/16 b2=198.18.1.3/16 || exit 1
MESH=$(dmsc_cgroup_make "$P/mesh") || exit 1

for b in b1:198.18.1.2:v1 b2:198.18.1.3:v2; do
	IFS=: read -r host addr name <<<"$b"
	dmsc_testsrv "$host" "$name" id "$addr:9080" 3600 "$T/$host.out"
done
dmsc_backends_ready "$T/b1.out" "$T/b2.out"

# backends_json "ADDR:WEIGHT ..." -> the backends array of reviews
backends_json() {
	local sep="" b
	printf '['
	for b in $1; do
		printf '%s{ "address": "%s", "port": 9080, "weight": %s }' "$sep" "${b%%:*}" "${b##*:}"
		sep=", "
	done
	printf ']'
}

# reviews_policy "ADDR:WEIGHT ..." > file
reviews_policy() {
	printf '{ "services": [ { "name": "reviews", "vip": "%s", "port": 9080, "backends": %s } ] }\n' \
		"$VIP" "$(backends_json "$1")"
}

# put FILE CONTENT-FILE: replaces FILE the way editors and config tools do
# (write aside, rename over), so that dmscd never reads half a file.
put() {
	cp "$2" "$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"
}

start_dmscd() { dmsc_start_dmscd 60 "$@"; }
stop_dmscd() { dmsc_stop_dmscd "$@"; }

metrics_url() {
	grep -o 'http://[0-9.:]*/metrics' "$LOG" | tail -n 1
}

# metric NAME-AND-LABELS: the value of one series from dmscd's endpoint. A
# scrape that fails (cut off or timed out: 10,000 services on a loaded
# machine) is tried again, 3 times at most.
metric() {
	local i out
	for i in 1 2 3; do
		out=$(curl -sS --max-time 60 "$(metrics_url)") && break
	done
	awk -v k="$1" '$1 == k { print $2 }' <<<"$out"
}

# apply_file CONTENT-FILE: puts it in place and waits for dmscd's next
# summary line (applied or not).
apply_file() {
	local before
	before=$(t_nlines "$LOG" '^dmscd: applied .*\(changed\)|not applied|apply failed')
	put "$POL" "$1"
	t_wait_lines "$LOG" '^dmscd: applied .*\(changed\)|not applied|apply failed' $((before + 1)) 60
}

last_applied() {
	grep -E '^dmscd: applied ' "$LOG" | tail -n 1
}

# (generous bounds: 30 s a connect or read, 300 s in all, for a slow machine)
probe() {
	dmsc_run_in_cgroup "$MESH" dmsc_net_exec c "$PROBE" --json --max-seconds 300 --timeout-ms 30000 "$@"
}

# load_start NAME: batches of connections through the VIP until
# $T/NAME.stop exists (at most 150 batches), one JSON line per batch; and
# one long connection (hold) of HOLD seconds.
load_start() {
	local name=$1 hold=$2
	rm -f "$T/$name.stop" "$T/$name.batches"
	(
		for ((i = 0; i < 150; i++)); do
			[[ -e $T/$name.stop ]] && break
			probe --connect "$VIP:9080" --count 100 --parallel 4 >>"$T/$name.batches"
		done
	) &
	LOADPIDS+=($!)
	probe --connect "$VIP:9080" --hold-seconds "$hold" --interval-ms 50 >"$T/$name.hold" &
	LOADPIDS+=($!)
}

# load_batches NAME N: the load wrote N batches or more.
load_batches() { [[ -f $T/$1.batches ]] && (($(wc -l <"$T/$1.batches") >= $2)); }

# load_stop NAME: stops the batches (once there are 3, what the checks ask
# for, however slow the machine: bounded), waits for the hold to end.
load_stop() {
	local p
	t_wait 120 load_batches "$1" 3
	touch "$T/$1.stop"
	for p in "${LOADPIDS[@]}"; do
		wait "$p"
	done
	LOADPIDS=()
}

# load_report NAME: "batches connections ok failed v1"
load_report() {
	jq -s '[length, (map(.connections) | add), (map(.ok) | add), (map(.failed) | add),
		(map(.backends.v1 // 0) | add)] | map(tostring) | join(" ")' -r "$T/$1.batches"
}

# ---- 1. start: install, apply, watch -----------------------------------
reviews_policy "198.18.1.2:80 198.18.1.3:20" >"$T/p8020.json"
cp "$T/p8020.json" "$POL"
start_dmscd --cgroup "$MESH" --policy "$POL"
t_check "dmscd installs the datapath on the test cgroup" grep -q 'installed the datapath' "$LOG"
t_check "dmscd logs one line per applied change" grep -q '^dmscd: add reviews: 198.19.0.10:9080/tcp, 2 backends' "$LOG"
probe --connect "$VIP:9080" --count 2000 --parallel 8 >"$T/split.json"
t_eq "2000 connections through the VIP succeed" "$(jq .ok "$T/split.json")" 2000
# Centred on v1's slot share, 102 of 128 = 79.69% (a CI run once saw 75.6%
# of 1000 with 76-84 centred on 80: 3.2 standard deviations below the slots).
t_share "v1 gets its slot share of them" "$(jq '.backends.v1 // 0' "$T/split.json")" 2000 79.69

# ---- 2. metrics, checked strictly --------------------------------------
curl -sS --max-time 30 "$(metrics_url)" >"$T/metrics.txt"
t_check "metrics are served on a loopback address" grep -q '^http://127\.0\.0\.1:' <<<"$(metrics_url)"
awk -f "$PROMCHECK" "$T/metrics.txt" >"$T/promcheck.out" 2>&1
t_check "the metrics pass the strict text-format check" test $? -eq 0
cat "$T/promcheck.out"
printf '# TYPE dmsc_x_total counter\ndmsc_x_total{service="a\\q"} 1\n' >"$T/badmetrics.txt"
! awk -f "$PROMCHECK" "$T/badmetrics.txt" >/dev/null 2>&1
t_check "the checker rejects a bad escape (it can fail)" test $? -eq 0
t_eq "connections per service in the metrics match the maps" \
	"$(awk '$1 == "dmsc_service_connections_total{service=\"reviews\",vip=\"198.19.0.10:9080/tcp\"}" { print $2 }' "$T/metrics.txt")" \
	"$("$CTL" stats -o json | jq '.services[] | select(.name == "reviews") | .connections')"
t_eq "connections per backend in the metrics match the probe" \
	"$(awk '$1 == "dmsc_backend_connections_total{service=\"reviews\",vip=\"198.19.0.10:9080/tcp\",backend=\"198.18.1.2:9080\"}" { print $2 }' "$T/metrics.txt")" \
	"$(jq '.backends.v1 // 0' "$T/split.json")"
# The fast path's counters (issue 3) in the metrics: the probe's sockets
# register when they connect; this suite's servers are outside the mesh (and
# speak first), so none is paired.
fpm() { awk -v k="dmsc_fastpath_$1{service=\"reviews\",vip=\"198.19.0.10:9080/tcp\"$2}" '$1 == k { print $2 }' "$T/metrics.txt"; }
fps() { "$CTL" stats -o json | jq ".services[] | select(.name == \"reviews\") | .fastpath.$1"; }
t_eq "fast path registrations in the metrics match dmscctl stats, and are counted" \
	"$(fpm sockets_registered_total ''):$(($(fps registered) >= 2000))" "$(fps registered):1"
t_eq "fast path pairings, misses and stack messages in the metrics match dmscctl stats" \
	"$(fpm connections_paired_total ''):$(fpm misses_total ',reason="no_peer"'):$(fpm messages_total ',path="stack"')" \
	"$(fps paired):$(fps no_peer):$(fps stack_msgs)"
t_check "the fast path metrics have a sample for connections without a VIP" \
	grep -q '^dmsc_fastpath_messages_total{service="",vip="",path="redirected"} ' "$T/metrics.txt"
for m in dmsc_service_refused_total dmsc_datapath_events_total dmsc_map_entries dmsc_map_capacity \
	dmsc_apply_total dmsc_apply_duration_seconds dmsc_apply_entries_written_total \
	dmsc_fastpath_bytes_total dmsc_fastpath_fallbacks_total dmsc_fastpath_skipped_total; do
	t_check "metric family $m is exported" grep -q "^# TYPE $m " "$T/metrics.txt"
done
t_eq "map usage in the metrics" "$(awk '$1 == "dmsc_map_entries{map=\"dmsc_services\"}" { print $2 }' "$T/metrics.txt")" 1
t_eq "a request for another path gets 404" \
	"$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$(metrics_url | sed 's,/metrics$,/nope,')")" 404

# ---- 3. backend set switches under load --------------------------------
reviews_policy "198.18.1.2:1" >"$T/only1.json"
reviews_policy "198.18.1.3:1" >"$T/only2.json"
load_start switch 6
sleep 0.3
for i in 1 2 3 4 5; do
	apply_file "$T/only2.json"
	sleep 0.2
	apply_file "$T/only1.json"
	sleep 0.2
done
apply_file "$T/p8020.json"
load_stop switch
read -r batches conns ok failed v1 <<<"$(load_report switch)"
t_check "load ran through 10 backend set switches ($batches batches)" test "$batches" -ge 3
t_eq "no connection failed while the backend set switched" "$failed:$ok" "0:$conns"
t_eq "the long connection survived the switches" "$(jq -c '[.held, .errors]' "$T/switch.hold")" "[1,0]"
t_eq "no connect() met a missing backend or an empty slot" \
	"$(metric 'dmsc_datapath_events_total{reason="backend_missing"}'):$(metric 'dmsc_datapath_events_total{reason="slot_empty"}')" "0:0"
t_check "removed backends were cleared after a delay, not under a connect()" \
	grep -qE 'written \([1-9][0-9]* deferred\)' "$LOG"
backends_in_use() {
	bpftool -j map dump pinned "$DMSC_PIN_DIR/maps/dmsc_backends" |
		jq '[.[] | select((.formatted.value.addr // 0) != 0)] | length'
}
backends_cleared() { [[ $(backends_in_use) == 2 ]]; }
t_wait 10 backends_cleared
t_eq "removed backends' entries are cleared in the end: 2 entries in use in the map" \
	"$(backends_in_use)" 2

# ---- 4. restarts under load: SIGTERM and SIGKILL -----------------------
links_before=$("$CTL" status -o json | jq -c '[.hooks[].link_id]')
progs_before=$("$CTL" status -o json | jq -c '[.hooks[].prog_id]')
load_start restart 8
sleep 0.5
stop_dmscd TERM
t_check "SIGTERM: dmscd says the datapath keeps running" grep -q 'exiting; the datapath keeps running' "$LOG"
sleep 0.5
start_dmscd --policy "$POL"
t_check "a new dmscd adopts the datapath (no --cgroup needed)" grep -q 'adopted the datapath' "$LOG"
t_check "the adopting dmscd writes nothing for an unchanged policy" \
	grep -qE '\(start\): 1 service, 0 changes, 0 map entries written' <<<"$(last_applied)"
sleep 0.5
stop_dmscd KILL
sleep 0.5
start_dmscd --policy "$POL"
t_check "after SIGKILL a new dmscd adopts it too" test "$(t_nlines "$LOG" 'adopted the datapath')" -ge 2
sleep 0.5
load_stop restart
read -r batches conns ok failed v1 <<<"$(load_report restart)"
t_check "load ran through the restarts ($batches batches)" test "$batches" -ge 3
t_eq "no connection failed across SIGTERM, SIGKILL and restarts" "$failed:$ok" "0:$conns"
t_share "the split held across restarts (v1's share)" "$v1" "$conns" 79.69
t_eq "the long connection survived the restarts" "$(jq -c '[.held, .errors]' "$T/restart.hold")" "[1,0]"

# ---- 5. programs replaced in place under load ---------------------------
t_eq "restarts kept the links" "$("$CTL" status -o json | jq -c '[.hooks[].link_id]')" "$links_before"
progs_mid=$("$CTL" status -o json | jq -c '[.hooks[].prog_id]')
t_check "restarts replaced the programs ($progs_before -> $progs_mid)" test "$progs_mid" != "$progs_before"
load_start upgrade 6
sleep 0.5
for i in 1 2 3; do
	stop_dmscd TERM
	start_dmscd --policy "$POL"
	"$CTL" install --cgroup "$MESH" >/dev/null
	sleep 0.3
done
load_stop upgrade
read -r batches conns ok failed v1 <<<"$(load_report upgrade)"
progs_after=$("$CTL" status -o json | jq -c '[.hooks[].prog_id]')
t_check "6 in-place program replacements happened ($progs_mid -> $progs_after)" test "$progs_after" != "$progs_mid"
t_eq "the links stayed the same across replacements" "$("$CTL" status -o json | jq -c '[.hooks[].link_id]')" "$links_before"
t_check "load ran through the replacements ($batches batches)" test "$batches" -ge 3
t_eq "no connection failed while programs were replaced" "$failed:$ok" "0:$conns"
t_eq "the long connection survived the replacements" "$(jq -c '[.held, .errors]' "$T/upgrade.hold")" "[1,0]"

# ---- 6. an invalid policy file changes nothing ---------------------------
before=$("$CTL" show services -o json)
printf '{ "services": [ { "name": "reviews", \n' >"$T/broken.json"
invalid_before=$(metric 'dmsc_apply_total{result="invalid"}')
apply_file "$T/broken.json"
t_check "invalid JSON is logged with its position" grep -qE 'policy.json: line [0-9]+, column [0-9]+: JSON syntax error' "$LOG"
t_check "...and the log says nothing was applied" grep -q 'not applied (1 problem); the datapath is unchanged' "$LOG"
t_eq "the datapath is unchanged by invalid JSON" "$("$CTL" show services -o json)" "$before"
t_eq "invalid applies are counted" "$(metric 'dmsc_apply_total{result="invalid"}')" $((invalid_before + 1))
probe --connect "$VIP:9080" --count 200 --parallel 4 >"$T/after-broken.json"
t_eq "connections still flow with a broken policy file" "$(jq .ok "$T/after-broken.json")" 200
reviews_policy "198.18.1.2:50 198.18.1.3:50" >"$T/p5050.json"
apply_file "$T/p5050.json"
t_check "fixing the file applies it" grep -qE '^dmscd: update reviews: 198.18.1.2:9080 weight 80 -> 50; 198.18.1.3:9080 weight 20 -> 50' "$LOG"
t_eq "the fixed policy is in the maps" \
	"$("$CTL" show services -o json | jq -c '[.services[0].backends[].slots]')" "[64,64]"

# ---- 7. dmscctl and dmscd are serialised and stay consistent -------------
"$CTL" apply "$T/only2.json" >/dev/null
t_eq "dmscctl apply while dmscd runs" "$("$CTL" show services -o json | jq -c '[.services[0].backends[].address]')" '["198.18.1.3:9080"]'
apply_file "$T/p8020.json"
t_check "dmscd notices the other writer and reads the maps again" grep -q 'changed by another writer' "$LOG"
t_eq "dmscd's next apply brings the maps to its policy" \
	"$("$CTL" show services -o json | jq -c '[.services[0].backends[].slots]')" "[102,26]"
# Both at once, many times: the lock serialises them, every apply succeeds.
for i in $(seq 1 10); do
	"$CTL" apply "$T/p5050.json" >/dev/null 2>&1 || echo "dmscctl apply $i failed" >>"$T/ctl-fail"
done &
ctl_loop=$!
for i in 1 2 3; do
	apply_file "$T/p8020.json"
done
wait "$ctl_loop"
t_check "concurrent dmscctl applies all succeeded" test ! -e "$T/ctl-fail"
t_eq "no dmscd apply failed" "$(metric 'dmsc_apply_total{result="failed"}')" 0
apply_file "$T/p5050.json"
apply_file "$T/p8020.json"
t_eq "the last writer's policy is what the maps hold" \
	"$("$CTL" show services -o json | jq -c '[.services[0].backends[].slots]')" "[102,26]"

# ---- 7b. allow_from a cgroup that does not exist yet: dmscd resolves it later --
late_rel=dmsc-test/$P/mesh/late
printf '{ "services": [ %s, { "name": "web", "vip": "198.19.0.11", "port": 80, "allow_from": [ "%s" ], "backends": [ { "address": "198.18.1.2", "port": 9080 } ] } ] }\n' \
	"$(reviews_policy "198.18.1.2:80 198.18.1.3:20" | sed -e 's/^{ "services": \[ //' -e 's/ \] }$//')" \
	"$late_rel" >"$T/late.json"
apply_file "$T/late.json"
t_check "an allow_from path with no cgroup yet is reported" grep -q 'allow_from path with no cgroup yet' "$LOG"
probe --connect "198.19.0.11:80" --count 5 >"$T/late-closed.json"
t_eq "...and nobody may connect meanwhile (EPERM)" "$(jq -c '[.ok, .errors.EPERM]' "$T/late-closed.json")" "[0,5]"
# Either the retry of the apply or the cgroup watch (which re-resolves
# the rule in place) may see it first.
late_re="update web: allow_from changed|allow_from \"$late_rel\" .* re-resolved: cgroup id none -> [0-9]"
n_before=$(t_nlines "$LOG" "$late_re")
LATE=$(dmsc_cgroup_make "$P/mesh/late") || exit 1
t_wait_lines "$LOG" "$late_re" $((n_before + 1)) 60
t_check "once the cgroup exists, dmscd applies the rule by itself" test "$(t_nlines "$LOG" "$late_re")" -gt "$n_before"
got=$(dmsc_run_in_cgroup "$LATE" dmsc_net_exec c "$PROBE" --json --max-seconds 20 --connect 198.19.0.11:80 --count 5 | jq .ok)
t_eq "a process in that cgroup may connect now" "$got" 5
apply_file "$T/p8020.json"

# ---- 8. a directory of policies --------------------------------------------
stop_dmscd TERM
mkdir -p "$T/dir"
cp "$T/p8020.json" "$T/dir/10-reviews.json"
printf '{ "services": [ { "name": "web", "vip": "198.19.0.11", "port": 80, "backends": [ { "address": "198.18.1.2", "port": 9080 } ] } ] }\n' \
	>"$T/dir/20-web.json"
echo 'not json' >"$T/dir/README"
start_dmscd --policy "$T/dir"
t_eq "a directory's files are merged" "$("$CTL" show services -o json | jq -c '[.services[].name]')" '["reviews","web"]'
before=$("$CTL" show services -o json)
n_before=$(t_nlines "$LOG" 'not applied')
printf '{ "services": [ { "name": "reviews", "vip": "198.19.0.12", "port": 80, "backends": [ { "address": "198.18.1.3", "port": 9080 } ] } ] }\n' \
	>"$T/dir/.30-dup.json.tmp"
mv "$T/dir/.30-dup.json.tmp" "$T/dir/30-dup.json"
t_wait_lines "$LOG" 'not applied' $((n_before + 1)) 60
t_check "a name defined in two files is reported with both files" \
	grep -qE '30-dup.json: services\[0\]: the name "reviews" is also defined in .*10-reviews.json \(services\[0\]\)' "$LOG"
t_eq "the duplicate changed nothing" "$("$CTL" show services -o json)" "$before"
rm "$T/dir/30-dup.json"
# An http service on the VIP:port of a tcp one in another file: the kernel
# keys both as TCP, so the second would overwrite the first.
n_before=$(t_nlines "$LOG" 'not applied')
printf '{ "services": [ { "name": "reviews-http", "vip": "%s", "port": 9080, "protocol": "http", "backends": [ { "address": "198.18.1.3", "port": 9080 } ] } ] }\n' \
	"$VIP" >"$T/dir/.40-http.json.tmp"
mv "$T/dir/.40-http.json.tmp" "$T/dir/40-http.json"
t_wait_lines "$LOG" 'not applied' $((n_before + 1)) 60
t_check "a tcp and an http service on one VIP:port in two files are refused, naming both files and services" \
	grep -qE "40-http.json: services\[0\] \(reviews-http\): $VIP:9080/http is also the address of services\[0\] \(reviews\) in .*10-reviews.json as tcp" "$LOG"
t_eq "the tcp/http duplicate changed nothing" "$("$CTL" show services -o json)" "$before"
n_before=$(t_nlines "$LOG" '^dmscd: applied ')
rm "$T/dir/40-http.json"
t_wait_lines "$LOG" '^dmscd: applied ' $((n_before + 1)) 60
t_check "removing the duplicate applies the directory again (nothing to write)" \
	grep -qE '2 services, 0 changes, 0 map entries' <<<"$(last_applied)"
stop_dmscd TERM

# ---- 9. incremental: one weight in 10,000 services ---------------------------
# svc_policy N WEIGHT5000: reviews plus N-1 services of 4 backends each
# (addresses nobody connects to); service 5000's first weight is WEIGHT5000.
svc_policy() {
	awk -v n="$1" -v w="$2" -v vip="$VIP" 'BEGIN {
		printf "{ \"services\": [\n"
		printf "{ \"name\": \"reviews\", \"vip\": \"%s\", \"port\": 9080, \"backends\": [ { \"address\": \"198.18.1.2\", \"port\": 9080, \"weight\": 80 }, { \"address\": \"198.18.1.3\", \"port\": 9080, \"weight\": 20 } ] }", vip
		for (i = 1; i < n; i++) {
			a = int(i / 250); b = i % 250 + 1
			printf ",\n{ \"name\": \"svc-%d\", \"vip\": \"198.19.%d.%d\", \"port\": 80, \"backends\": [", i, 100 + a, b
			for (k = 0; k < 4; k++)
				printf "%s{ \"address\": \"198.18.%d.%d\", \"port\": %d, \"weight\": %d }", k ? ", " : " ", 100 + a, b, 8080 + k, (i == 5000 && k == 0) ? w : 1
			printf " ] }"
		}
		printf "\n] }\n"
	}'
}
svc_policy 10000 1 >"$T/p10k.json"
svc_policy 10000 7 >"$T/p10k-w7.json"
cp "$T/p10k.json" "$POL"
start_dmscd --policy "$POL"
t_check "a 10,000-service policy is applied" grep -qE '\(start\): 10000 services, ' <<<"$(last_applied)"
"$CTL" show services -o json >"$T/before10k.json"
written_before=$(metric dmsc_apply_entries_written_total)
apply_file "$T/p10k-w7.json"
line=$(last_applied)
echo "# $line"
written=$(sed -nE 's/.* ([0-9]+) map entr(y|ies) written.*/\1/p' <<<"$line")
t_check "one weight changed in 10,000 services: 1 change reported" grep -q ' 1 change, ' <<<"$line"
t_range "...and at most 4 map entries written (reported: $written)" "$written" 1 4
t_eq "the metrics count the same entries" "$(metric dmsc_apply_entries_written_total)" $((written_before + written))
"$CTL" show services -o json >"$T/after10k.json"
t_eq "reading the maps back: exactly one service differs, svc-5000" \
	"$(jq -n -c --slurpfile a "$T/before10k.json" --slurpfile b "$T/after10k.json" \
		'[range(0; $a[0].services | length) as $i | select($a[0].services[$i] != $b[0].services[$i]) | $b[0].services[$i].name]')" \
	'["svc-5000"]'
t_eq "...with the new weight" \
	"$(jq -c '.services[] | select(.name == "svc-5000") | [.backends[].weight]' "$T/after10k.json")" "[7,1,1,1]"
t_eq "every service is still there" "$(jq '.services | length' "$T/after10k.json")" 10000
probe --connect "$VIP:9080" --count 200 --parallel 4 >"$T/p10k-probe.json"
t_eq "connections flow with 10,000 services" "$(jq .ok "$T/p10k-probe.json")" 200
rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$DPID/status")
echo "# dmscd VmRSS with 10,000 services: ${rss} kB"

# ---- 10. capacity: a policy that does not fit is refused up front ----------
svc_policy 16500 1 >"$T/p16k.json"
failed_before=$(metric 'dmsc_apply_total{result="failed"}')
apply_file "$T/p16k.json"
t_check "an apply that does not fit says so with the capacity" \
	grep -q 'the policy has 16500 services and 65998 backends; this datapath holds at most 16383 and 65535' "$LOG"
t_eq "it is counted as failed" "$(metric 'dmsc_apply_total{result="failed"}')" $((failed_before + 1))
t_eq "the datapath still holds the 10,000 services" "$("$CTL" status -o json | jq .services)" 10000
t_eq "status shows usage against capacity" "$("$CTL" status -o json | jq -c '[.services, .services_capacity, .backends, .backends_capacity]')" \
	"[10000,16383,39998,65535]"

# ---- 11. dmscd gone, datapath stays; uninstall removes everything ----------
stop_dmscd TERM
probe --connect "$VIP:9080" --count 50 >"$T/nodaemon.json"
t_eq "with no dmscd running, connections are still translated" "$(jq .ok "$T/nodaemon.json")" 50
t_check "dmscctl uninstall" "$CTL" uninstall
t_check "no pins are left" test ! -e "$DMSC_PIN_DIR"
probe --connect "$VIP:9080" --count 5 >"$T/gone.json"
t_eq "after uninstall the VIP is not translated" "$(jq .ok "$T/gone.json")" 0

t_summary
