#!/usr/bin/env bash
# Policy carried by etcd: a real etcd on 127.0.0.1 (private data directory,
# free ports) and two simulated hosts, each with its own cgroup, pin
# directory, dmscd and client namespace; h1 subscribes to namespace a, h2
# to namespace b. A service published in a reaches h1 and never h2's maps;
# a weight change moves the split; a delete removes it; etcd stopped and
# started again: traffic flows throughout and the change made meanwhile
# arrives; dmscd SIGKILLed and restarted writes only the difference (0
# entries against an unchanged etcd), and before its first read (etcd
# down) a SIGHUP applies nothing; hostile values are refused with
# their key named, the rest applied; a read a page at a time converges
# across a publish between its pages and writes nothing on a restart.
set -u
. "$(cd "$(dirname "$0")/../lib" && pwd)/kernel.sh"
. "$(cd "$(dirname "$0")/../lib" && pwd)/etcd.sh"
EPID= D1= D2= D3=
LOADPIDS=()
MPIDS=()
suite_cleanup() {
	local p
	# h3's dmscd stops its dmsc-l7 on SIGTERM
	dmsc_stop TERM "$D3"
	[[ -n ${KEEP_LOG:-} ]] && cp "$T"/*.log "$KEEP_LOG" 2>/dev/null
	dmsc_stop KILL "${LOADPIDS[@]}" $D1 $D2 $EPID "${MPIDS[@]}"
	for p in "$T/bpffs/h1" "$T/bpffs/h2" "$T/bpffs/h3"; do
		[[ -d $p ]] && DMSC_PIN_DIR=$p "$CTL" uninstall >/dev/null 2>&1
	done
}
dmsc_suite_begin etcd detc$$
command -v etcd >/dev/null || { echo "etcd is not installed (scripts/install-deps.sh)"; exit 77; }
VIP=198.19.0.10
H1=$T/bpffs/h1 H2=$T/bpffs/h2

dmsc_net_hosts c1=198.18.0.2/16 c2=198.18.0.3/16 n=198.18.0.1/16 \
	b1=198.18.1.2/16 b2=198.18.1.3/16 || exit 1
dmsc_cgroups CG1=h1 CG2=h2 CG3=h3 || exit 1
for b in b1:198.18.1.2:v1 b2:198.18.1.3:v2; do
	IFS=: read -r host addr name <<<"$b"
	dmsc_testsrv "$host" "$name" id "$addr:9080" 600 "$T/$host.out"
	dmsc_testsrv "$host" "$name" http "$addr:8080" 600 "$T/$host.http.out"
done
for f in b1 b2 b1.http b2.http; do
	dmsc_backends_ready "$T/$f.out"
done

# ---- etcd: free ports on loopback, a data directory of the suite's own
CPORT=$(free_port) && PPORT=$(free_port) || { t_fail "free ports for etcd"; t_summary; exit 1; }
EURL=http://127.0.0.1:$CPORT
etcd_start() {
	etcd_run dmsc-test "$T/etcd" "$EURL" "$PPORT" "$T/etcd.log"
	EPID=$ETCD_PID
	etcd_healthy "$EURL" 20
}
etcd_stop() {
	kill -TERM "$EPID" 2>/dev/null
	wait "$EPID" 2>/dev/null
	EPID=
}
etcd_start || { t_fail "etcd starts on $EURL"; t_summary; exit 1; }
t_ok "etcd $(etcd --version | head -n 1 | awk '{print $3}') serves $EURL"

# raw_put KEY VALUE-FILE: a value written straight to etcd (no validation).
raw_put() {
	printf '{"key":"%s","value":"%s"}' "$(printf %s "$1" | base64 -w0)" "$(base64 -w0 <"$2")" \
		>"$T/put.body"
	curl -sf --max-time 5 "$EURL/v3/kv/put" -o /dev/null -d @"$T/put.body"
}

# policy FILE NAME "ADDR:WEIGHT ..." [NAME2 VIP2 ...]: one service file
policy() {
	local f=$1 name=$2 bes=$3 sep="" b
	{
		printf '{ "services": [ { "name": "%s", "vip": "%s", "port": 9080, "backends": [' "$name" "$VIP"
		for b in $bes; do
			printf '%s{ "address": "%s", "port": 9080, "weight": %s }' "$sep" "${b%%:*}" "${b##*:}"
			sep=", "
		done
		printf '] } ] }\n'
	} >"$f"
}
publish() { "$CTL" publish "$@" --etcd "$EURL" 2>&1; }

# start_host N NS [ARG...]: dmscd of host N (pins H$N, cgroup CG$N) on namespace NS
start_host() {
	local n=$1 ns=$2 pin cg log
	shift 2
	pin=$T/bpffs/h$n
	cg=$(eval echo "\$CG$n")
	log=$T/h$n.log
	DMSC_PIN_DIR=$pin "$DMSCD" --etcd "$EURL" --namespace "$ns" --cgroup "$cg" \
		--metrics 127.0.0.1:0 --drop-delay-ms 50 "$@" >>"$log" 2>&1 &
	eval "D$n=\$!"
}
names() { DMSC_PIN_DIR=$1 "$CTL" show services -o json | jq -c '[.services[].name] | sort'; }
probe() {
	local n=$1
	shift
	dmsc_run_in_cgroup "$(eval echo "\$CG$n")" dmsc_net_exec "c$n" "$PROBE" --json --max-seconds 60 "$@"
}
applied() { t_nlines "$T/h$1.log" '^dmscd: applied .*\(etcd\)'; }
# after_apply N BEFORE: waits for host N's next apply
after_apply() { t_wait_lines "$T/h$1.log" '^dmscd: applied .*\(etcd\)' $(($2 + 1)) 20; }

# 1. Scoping: reviews in namespace a reaches h1 only.
policy "$T/a.json" reviews "198.18.1.2:80 198.18.1.3:20"
start_host 1 a
# h2's maps hold one service at most: section 1b makes its apply fail
start_host 2 b --max-services 1
t_check "h1's dmscd reads etcd" t_wait_lines "$T/h1.log" '^dmscd: applied .*\(etcd\)' 1 30
t_check "h2's dmscd reads etcd" t_wait_lines "$T/h2.log" '^dmscd: applied .*\(etcd\)' 1 30
a1=$(applied 1)
out=$(publish "$T/a.json" --namespace a)
t_check "publish to namespace a: $out" grep -q 'published 1 change' <<<"$out"
t_check "h1 applies reviews" after_apply 1 "$a1"
t_eq "h1's maps hold reviews" "$(names "$H1")" '["reviews"]'
t_eq "h2's maps never hold it" "$(names "$H2")" '[]'
t_eq "h2 applied nothing after its first read" "$(applied 2)" 1
probe 1 --connect "$VIP:9080" --count 400 --parallel 4 >"$T/split1.json"
t_eq "400 connections through the VIP on h1" "$(jq .ok "$T/split1.json")" 400
v1=$(jq '.backends.v1 // 0' "$T/split1.json")
t_share "v1's share on h1 is its slot share (80/20)" "$v1" 400 79.69
probe 2 --connect "$VIP:9080" --count 5 >"$T/h2none.json"
t_eq "on h2 the VIP is not translated" "$(jq .ok "$T/h2none.json")" 0
out=$(publish "$T/a.json" --namespace a)
t_check "publishing the same policy again writes nothing" grep -q 'published 0 changes' <<<"$out"
t_eq "get reads it back" "$("$CTL" -o json get --etcd "$EURL" --namespace a | jq -c '[.services[].name]')" '["reviews"]'

# 1b. Lag: while h2 cannot apply (a second service exceeds its capacity of
# one) its lag rises; the publish that fits brings it back to 0.
metric() {
	curl -sS --max-time 5 "$(grep -o 'http://[0-9.:]*/metrics' "$T/h$1.log" | tail -n 1)" |
		awk -v k="$2" '$1 == k { print $2 }'
}
lag_is() { [[ $(metric 2 dmsc_etcd_lag_revisions) == "$1" && $(metric 2 dmsc_etcd_lag_seconds) == "$2" ]]; }
lag_above() { awk -v a="$(metric 2 dmsc_etcd_lag_seconds)" -v b="$1" 'BEGIN { exit !(a > b) }'; }
policy "$T/b.json" solo "198.18.1.2:1"
sed -i 's/198.19.0.10/198.19.0.13/' "$T/b.json"
policy "$T/b2.json" duo "198.18.1.3:1"
sed -i 's/198.19.0.10/198.19.0.14/' "$T/b2.json"
jq -s '{services: (.[0].services + .[1].services)}' "$T/b.json" "$T/b2.json" >"$T/b12.json"
publish "$T/b.json" --namespace b >/dev/null
t_check "h2 applies one service" t_wait 20 test "$(names "$H2")" = '["solo"]'
t_check "h2's lag is 0 once it is applied" t_wait 10 lag_is 0 0
t_eq "its applied revision is etcd's" "$(metric 2 dmsc_etcd_applied_revision)" \
	"$("$CTL" -o json get --etcd "$EURL" --namespace b | jq .revision)"
f2=$(t_nlines "$T/h2.log" 'apply failed')
publish "$T/b12.json" --namespace b >/dev/null
t_check "h2 cannot apply a second service (capacity 1)" \
	t_wait_lines "$T/h2.log" 'apply failed' $((f2 + 1)) 20
t_eq "its lag is the one revision not applied" "$(metric 2 dmsc_etcd_lag_revisions)" 1
l0=$(metric 2 dmsc_etcd_lag_seconds)
t_check "its lag in seconds rises while it cannot apply ($l0 s, then more)" \
	t_wait 10 lag_above "$(awk -v a="$l0" 'BEGIN { print a + 0.3 }')"
t_eq "h2's maps keep solo (the datapath as it was)" "$(names "$H2")" '["solo"]'
publish "$T/b.json" --namespace b >/dev/null
t_check "the publish that fits brings its lag back to 0" t_wait 20 lag_is 0 0
t_eq "and h2's maps hold solo only" "$(names "$H2")" '["solo"]'

# 2. A weight change moves the split.
a1=$(applied 1)
policy "$T/a.json" reviews "198.18.1.2:20 198.18.1.3:80"
out=$(publish "$T/a.json" --namespace a --dry-run)
t_check "dry-run prints the plan: $out" grep -q 'would update /dmsc/ns/a/services/reviews' <<<"$out"
rev=$(sed -n 's/.*against revision \([0-9]*\)$/\1/p' <<<"$out")
# a concurrent publisher changes the namespace after the plan was read
policy "$T/other.json" other "198.18.1.3:1"
sed -i 's/198.19.0.10/198.19.0.12/' "$T/other.json"
jq -s '{services: (.[0].services + .[1].services)}' "$T/a.json" "$T/other.json" >"$T/both.json"
raw_put /dmsc/ns/a/services/other <(jq -c '.services[0]' "$T/other.json")
out=$(publish "$T/a.json" --namespace a --expect-revision "$rev")
t_check "a publish guarded by revision $rev fails cleanly after a concurrent change: $out" \
	grep -q "namespace a changed in etcd after revision $rev (another publisher?): nothing was published" <<<"$out"
t_eq "and wrote nothing: reviews keeps its weights in etcd" \
	"$("$CTL" -o json get reviews --etcd "$EURL" --namespace a | jq -c '[.services[0].backends[].weight]')" '[80,20]'
out=$(publish "$T/both.json" --namespace a)
t_check "publishing again succeeds: $out" grep -q 'published 1 change' <<<"$out"
t_check "h1 applies the concurrent service and the weight change" \
	t_wait_lines "$T/h1.log" '^dmscd: applied .*\(etcd\)' $((a1 + 2)) 20
t_eq "h1's maps hold both" "$(names "$H1")" '["other","reviews"]'
probe 1 --connect "$VIP:9080" --count 400 --parallel 4 >"$T/split2.json"
v1=$(jq '.backends.v1 // 0' "$T/split2.json")
t_share "v1's share on h1 moved to its slot share of 20/80" "$v1" 400 20.31

# 3. etcd stopped and started again: traffic flows throughout; the change
# published meanwhile (to a restarted etcd) arrives.
rm -f "$T/load.stop" "$T/load.batches"
(
	for ((i = 0; i < 100; i++)); do
		[[ -e $T/load.stop ]] && break
		probe 1 --connect "$VIP:9080" --count 50 --parallel 2 >>"$T/load.batches"
	done
) &
LOADPIDS+=($!)
etcd_stop
t_check "h1 notices that etcd is down" t_wait_lines "$T/h1.log" 'etcd: disconnected' 1 20
t_wait 10 test "$(wc -l <"$T/load.batches" 2>/dev/null || echo 0)" -ge 3
etcd_start || t_fail "etcd starts again"
a1=$(applied 1)
policy "$T/a.json" reviews "198.18.1.2:100 198.18.1.3:0"
out=$(publish "$T/a.json" --namespace a)
t_check "h1 applies the change made while its watch was down" after_apply 1 "$a1"
t_check "h1 reconnected" t_wait_lines "$T/h1.log" 'etcd: connected' 2 20
touch "$T/load.stop"
wait "${LOADPIDS[-1]}" 2>/dev/null
t_eq "no connection failed while etcd was away" \
	"$(jq -s 'map(.failed // 0) | add' "$T/load.batches")" 0
t_check "connections flowed meanwhile" test "$(jq -s 'map(.ok) | add' "$T/load.batches")" -gt 0
probe 1 --connect "$VIP:9080" --count 50 >"$T/drain.json"
t_eq "v2 drained (weight 0): every connection to v1" "$(jq '.backends.v1 // 0' "$T/drain.json")" 50

# 3b. Compaction: h1 is stopped and its watch cut (ss -K); etcd takes two
# changes and compacts past the first: resuming finds its revision gone,
# h1 reads the namespace again and applies only the difference.
full_reads() { metric 1 dmsc_etcd_full_reads_total; }
f0=$(full_reads) c0=$(t_nlines "$T/h1.log" 'etcd compacted its history')
kill -STOP "$D1"
if ss -K dst 127.0.0.1 dport = ":$CPORT" >/dev/null 2>&1; then
	policy "$T/c3.json" reviews "198.18.1.2:90 198.18.1.3:10"
	publish "$T/c3.json" --namespace a >/dev/null
	policy "$T/c3.json" reviews "198.18.1.2:60 198.18.1.3:40"
	out=$(publish "$T/c3.json" --namespace a)
	crev=${out##* }
	curl -sf --max-time 5 "$EURL/v3/kv/compaction" -d "{\"revision\":\"$crev\"}" -o /dev/null ||
		t_fail "etcd compacts at revision $crev"
	a1=$(applied 1)
	kill -CONT "$D1"
	CPAT="a/services/: the changes after revision [0-9]+ \(the last this host saw\) are gone: etcd compacted its history at revision $crev; reading the namespaces again"
	t_check "h1 is told the changes after the revision it saw were compacted: $CPAT" \
		t_wait_lines "$T/h1.log" "$CPAT" $((c0 + 1)) 20
	t_check "h1 applies after the read" after_apply 1 "$a1"
	t_eq "one more full read" "$(full_reads)" $((f0 + 1))
	t_check "that apply wrote only the difference (1 change): $(grep -E '^dmscd: applied' "$T/h1.log" | tail -n 1)" \
		grep -qE '^dmscd: applied .*\(etcd\): 1 service, 1 change,' <(grep -E '^dmscd: applied' "$T/h1.log" | tail -n 1)
	t_eq "h1's maps hold the last weights (60:40 -> 77 and 51 of 128 slots)" \
		"$(DMSC_PIN_DIR=$H1 "$CTL" show services -o json | jq -c '[.services[] | select(.name == "reviews") | .backends[].slots]')" \
		"[77,51]"
else
	kill -CONT "$D1"
	echo "skip - compaction: this kernel cannot close a socket from outside (ss -K, CONFIG_INET_DIAG_DESTROY)"
fi

# 2b. Another writer: once applied, dmscd keeps a plain service only as
# its fingerprint (the maps hold the rest). dmscctl apply rewrites h1's maps
# (reviews at other weights, a service etcd does not have); h1's next apply
# finds the maps not as it wrote them, reads etcd again and applies its
# services whole.
weights() { DMSC_PIN_DIR=$1 "$CTL" show services -o json | jq -c "[.services[] | select(.name == \"$2\") | .backends[].weight]"; }
policy "$T/writer.json" reviews "198.18.1.2:50 198.18.1.3:50"
policy "$T/intruder.json" intruder "198.18.1.3:1"
sed -i 's/198.19.0.10/198.19.0.12/' "$T/intruder.json"
jq -s '{services: (.[0].services + .[1].services)}' "$T/writer.json" "$T/intruder.json" >"$T/writer2.json"
DMSC_PIN_DIR=$H1 "$CTL" apply "$T/writer2.json" >/dev/null 2>&1
t_eq "another writer changed h1's maps" "$(names "$H1")" '["intruder","reviews"]'
a1=$(applied 1)
kill -HUP "$D1"
t_check "h1 reads etcd again to apply its services whole" \
	t_wait_lines "$T/h1.log" 'reading the namespaces again to apply their services whole' 1 20
t_check "and applies them" after_apply 1 "$a1"
t_eq "h1's maps hold etcd's services again" "$(names "$H1")" '["reviews"]'
t_eq "reviews has etcd's weights again" "$(weights "$H1" reviews)" \
	"$("$CTL" -o json get reviews --etcd "$EURL" --namespace a | jq -c '[.services[0].backends[].weight]')"

# 4. dmscd SIGKILLed and restarted against an unchanged etcd: 0 entries.
a1=$(applied 1)
kill -KILL "$D1"; wait "$D1" 2>/dev/null; D1=
start_host 1 a
t_check "h1's new dmscd reads etcd" t_wait_lines "$T/h1.log" '^dmscd: applied .*\(etcd\)' $((a1 + 1)) 30
t_check "the restart wrote 0 map entries: $(grep -E '^dmscd: applied' "$T/h1.log" | tail -n 1)" \
	grep -qE '^dmscd: applied .*\(etcd\): 1 service, 0 changes, 0 map entries written' \
	<(grep -E '^dmscd: applied' "$T/h1.log" | tail -n 1)

# 4a. SIGKILLed and restarted while publishes continue: h1 converges to the
# last one, and its first apply after the restart writes only the
# difference (one change at most: reviews is the only service).
rm -f "$T/pubs.done"
(
	for ((w = 1; w <= 12; w++)); do
		policy "$T/s4.json" reviews "198.18.1.2:$((40 + w)) 198.18.1.3:$((60 - w))"
		"$CTL" publish "$T/s4.json" --namespace a --etcd "$EURL" >>"$T/pubs.out" 2>&1
		sleep 0.2
	done
	touch "$T/pubs.done"
) &
LOADPIDS+=($!)
t_wait_lines "$T/pubs.out" '^published 1 change' 3 20
kill -KILL "$D1"; wait "$D1" 2>/dev/null; D1=
a1=$(applied 1)
start_host 1 a
t_check "h1's dmscd restarted under publishes reads etcd" after_apply 1 "$a1"
first=$(grep -E '^dmscd: applied .*\(etcd\)' "$T/h1.log" | sed -n "$((a1 + 1))p")
t_check "its first apply wrote only the difference: $first" \
	grep -qE '\(etcd\): 1 service, [01] changes?, [0-9] map entr' <<<"$first"
t_check "the publishes ended" t_wait 30 test -e "$T/pubs.done"
t_eq "12 publishes" "$(t_nlines "$T/pubs.out" '^published 1 change')" 12
lastrev=$("$CTL" -o json get --etcd "$EURL" --namespace a | jq .revision)
t_check "h1 converges to revision $lastrev" t_wait 20 bash -c \
	"[[ \$(curl -sS --max-time 2 '$(grep -o 'http://[0-9.:]*/metrics' "$T/h1.log" | tail -n 1)' |
	   awk '\$1 == \"dmsc_etcd_applied_revision\" { print \$2 }') -ge $lastrev ]]"
t_eq "h1's maps hold the last weights (52:48 -> 67 and 61 of 128 slots)" \
	"$(DMSC_PIN_DIR=$H1 "$CTL" show services -o json | jq -c '[.services[] | select(.name == "reviews") | .backends[].slots]')" \
	"[67,61]"
a1=$(applied 1)

# 4b. A dmscd that has not read etcd yet (its endpoint is down) applies
# nothing on SIGHUP: the maps it adopted keep their service.
kill -KILL "$D1"; wait "$D1" 2>/dev/null; D1=
DEAD=$(free_port) || { t_fail "a free port"; t_summary; exit 1; }
w1=$(t_nlines "$T/h1.log" '^dmscd: watching etcd')
s1=$(t_nlines "$T/h1.log" 'etcd not read yet')
EURL_UP=$EURL EURL=http://127.0.0.1:$DEAD
start_host 1 a
EURL=$EURL_UP
t_check "h1's dmscd starts with etcd unreachable" \
	t_wait_lines "$T/h1.log" '^dmscd: watching etcd' $((w1 + 1)) 30
kill -HUP "$D1"
t_check "a SIGHUP before etcd's first read applies nothing" \
	t_wait_lines "$T/h1.log" 'etcd not read yet; nothing applied' $((s1 + 1)) 20
t_eq "h1's maps still hold reviews" "$(names "$H1")" '["reviews"]'
kill -KILL "$D1"; wait "$D1" 2>/dev/null; D1=
a1=$(applied 1)
start_host 1 a
t_check "h1's dmscd reads etcd again" after_apply 1 "$a1"

# 4c. A read a page at a time (docs/design.md decision 61): h1 on
# namespaces a and pg with pages of 2 keys (DMSC_ETCD_PAGE_KEYS) applies
# pg's 7 services a page at a time; a service deleted while h1 was down
# leaves its maps once the whole read is in; a publish while the read
# holds between two pages (DMSC_TEST_ETCD_PAGE_HOLD: a key already read
# changed, a later one changed, one deleted, one added) arrives by the
# watch from the read's revision on, and the maps converge to etcd
# exactly; restarted against an unchanged etcd the pages write 0 entries.
pg_policy() { # pg_policy FILE "N:W ...": services pN at 198.19.9.N
	local sep="" nw
	{
		printf '{ "services": ['
		for nw in $2; do
			printf '%s{ "name": "p%s", "vip": "198.19.9.%s", "port": 9080, "backends": [ { "address": "198.18.1.2", "port": 9080, "weight": %s }, { "address": "198.18.1.3", "port": 9080, "weight": 1 } ] }' \
				"$sep" "${nw%%:*}" "${nw%%:*}" "${nw##*:}"
			sep=", "
		done
		printf '] }\n'
	} >"$1"
}
# h1's services of namespace pg and their first backend's weight
pg_is() { [[ $(pg_weights) == "$1" ]]; }
pg_weights() { DMSC_PIN_DIR=$H1 "$CTL" show services -o json | jq -c '[.services[] | select(.name | test("^p[0-9]$")) | "\(.name):\(.backends[0].weight)"] | sort'; }
# the applies after line $1 of h1's log, and the map entries they wrote
applies_since() { tail -n +"$(($1 + 1))" "$T/h1.log" | grep -cE '^dmscd: applied .*\(etcd\)'; }
written_since() {
	tail -n +"$(($1 + 1))" "$T/h1.log" | grep -E '^dmscd: applied .*\(etcd\)' |
		sed -nE 's/.* ([0-9]+) map entr(y|ies) written.*/\1/p' | awk '{ s += $1 } END { print s + 0 }'
}
# after line $1 of h1's log: a read of every namespace, and the apply after it
read_in() {
	tail -n +"$(($1 + 1))" "$T/h1.log" | grep -E '^dmscd: (etcd: read [0-9]+ namespace|applied .*\(etcd\))' |
		grep -A1 'etcd: read' | grep -q '^dmscd: applied'
}
# paged_h1 [ENV=VALUE...]: h1 restarted on namespaces a and pg, pages of 2 keys
paged_h1() {
	kill -KILL "$D1"; wait "$D1" 2>/dev/null; D1=
	L0=$(wc -l <"$T/h1.log")
	export DMSC_ETCD_PAGE_KEYS=2 "$@"
	start_host 1 a --namespace pg
	unset DMSC_ETCD_PAGE_KEYS DMSC_TEST_ETCD_PAGE_HOLD
}
pg_policy "$T/pg.json" "1:1 2:1 3:1 4:1 5:1 6:1 7:1"
out=$(publish "$T/pg.json" --namespace pg)
t_check "7 services published to namespace pg: $out" grep -q '^published 7 changes' <<<"$out"
paged_h1
t_check "h1 reads a and pg a page at a time" t_wait 30 read_in "$L0"
t_check "each full page applied before the next ($(applies_since "$L0") applies: 3 pages and the read's end)" \
	test "$(applies_since "$L0")" -ge 4
t_eq "h1's maps hold reviews and p1-p7" "$(names "$H1")" \
	'["p1","p2","p3","p4","p5","p6","p7","reviews"]'
pg_policy "$T/pg.json" "1:1 2:1 3:1 4:1 5:1 6:1"
publish "$T/pg.json" --namespace pg >/dev/null
touch "$T/hold"
w0=$(t_nlines "$T/h1.log" 'the next page waits')
paged_h1 DMSC_TEST_ETCD_PAGE_HOLD="$T/hold"
t_check "p7 deleted while h1 was down; h1 reads again and holds before pg's second page" \
	t_wait_lines "$T/h1.log" 'the next page waits' $((w0 + 1)) 30
pg_policy "$T/pg.json" "1:5 2:1 3:1 4:1 5:5 8:1"
out=$(publish "$T/pg.json" --namespace pg)
prev=${out##* }
rm -f "$T/hold"
t_check "a publish between two pages (p1 read already and p5 changed, p6 deleted, p8 added: $out)" \
	grep -q '^published 4 changes' <<<"$out"
t_check "h1's read goes on and is in" t_wait 30 read_in "$L0"
rrev=$(tail -n +"$((L0 + 1))" "$T/h1.log" | sed -nE 's/.*etcd: read [0-9]+ namespaces at revision ([0-9]+).*/\1/p' | tail -n 1)
t_check "the read was at revision $rrev, before the publish's $prev" \
	test "${rrev:-0}" -gt 0 -a "${rrev:-0}" -lt "${prev:-0}"
t_check "h1's maps converge to etcd exactly: p7 gone, p1 and p5 at weight 5, p6 gone, p8 in" \
	t_wait 20 pg_is '["p1:5","p2:1","p3:1","p4:1","p5:5","p8:1"]'
paged_h1
t_check "h1 restarted against an unchanged etcd reads it a page at a time" t_wait 30 read_in "$L0"
t_check "and its $(applies_since "$L0") applies wrote 0 map entries in all" \
	test "$(written_since "$L0")" = 0 -a "$(applies_since "$L0")" -ge 3
kill -KILL "$D1"; wait "$D1" 2>/dev/null; D1=
L0=$(wc -l <"$T/h1.log")
start_host 1 a
t_check "h1 back on namespace a alone" t_wait 30 read_in "$L0"
t_eq "pg's services left its maps once the read was in" "$(names "$H1")" '["reviews"]'

# 5. Hostile values: refused with the key named; the rest applied.
a1=$(applied 1)
printf '{"name":' >"$T/bad1"
raw_put /dmsc/ns/a/services/broken "$T/bad1"
sed 's/.*"services": \[ //; s/ \] }$//' "$T/a.json" | sed 's/"reviews"/"other"/' >"$T/bad2"
raw_put /dmsc/ns/a/services/mismatch "$T/bad2"
head -c 200000 /dev/zero | tr '\0' ' ' >"$T/bad3"
raw_put /dmsc/ns/a/services/huge "$T/bad3"
t_check "invalid JSON refused, its key named" \
	t_wait_lines "$T/h1.log" 'etcd key /dmsc/ns/a/services/broken: not JSON.*refused' 1 20
t_check "a name that is not the key's refused, its key named" \
	t_wait_lines "$T/h1.log" 'etcd key /dmsc/ns/a/services/mismatch: name: must be "mismatch".*refused' 1 20
t_check "a huge value refused, its key named" \
	t_wait_lines "$T/h1.log" 'etcd key /dmsc/ns/a/services/huge: the value is 200000 bytes.*refused' 1 20
sed 's/"reviews"/"ratings"/; s/198.19.0.10/198.19.0.11/' "$T/a.json" >"$T/r.json"
printf '%s' "$(jq -c '.services[0]' "$T/r.json")" >"$T/ratings.val"
raw_put /dmsc/ns/a/services/ratings "$T/ratings.val"
t_check "a valid service next to them is applied" \
	t_wait 20 test "$(names "$H1")" = '["ratings","reviews"]'
probe 1 --connect "$VIP:9080" --count 20 >"$T/intact.json"
t_eq "reviews still answers on h1 (the datapath intact)" "$(jq .ok "$T/intact.json")" 20

# 6. A delete removes it.
a1=$(applied 1)
printf '{ "services": [] }\n' >"$T/empty.json"
out=$(publish "$T/empty.json" --namespace a)
t_check "publishing an empty policy deletes every key: $out" grep -q 'delete /dmsc/ns/a/services/reviews' <<<"$out"
t_check "h1's maps drop reviews and ratings" t_wait 20 test "$(names "$H1")" = '[]'
probe 1 --connect "$VIP:9080" --count 5 >"$T/gone.json"
t_eq "the VIP is gone on h1" "$(jq .ok "$T/gone.json")" 0

metrics=$(curl -sS --max-time 10 "$(grep -o 'http://[0-9.:]*/metrics' "$T/h1.log" | tail -n 1)")
t_eq "metrics: connected" "$(awk '$1 == "dmsc_etcd_connected" { print $2 }' <<<"$metrics")" 1
t_check "metrics: events and bytes received" \
	test "$(awk '$1 == "dmsc_etcd_received_bytes_total" { print $2 }' <<<"$metrics")" -gt 0
t_check "metrics: refused values counted" \
	test "$(awk '$1 == "dmsc_etcd_refused_values_total" { print $2 }' <<<"$metrics")" -ge 3

# 6b. dmscd keeps the pinned maps open between applies, and opens them
# afresh when an install re-pinned one (the services map re-created, as a
# migration does: a new map renamed over the pin, the programs moved to it
# by the install), after an uninstall and a new install, and on SIGHUP:
# every change reaches the maps that the pins name and the programs read.
opens() { metric 1 dmsc_datapath_opens_total; }
kept() { # kept WEIGHT1 WEIGHT2: published, then in h1's maps
	policy "$T/kept.json" kept "198.18.1.2:$1 198.18.1.3:$2"
	sed -i 's/198.19.0.10/198.19.0.15/' "$T/kept.json"
	publish "$T/kept.json" --namespace a >/dev/null
	t_wait 20 test "$(weights "$H1" kept)" = "[$1,$2]"
}
kept_answers() {
	probe 1 --connect 198.19.0.15:9080 --count 20 >"$T/kept.out"
	t_eq "kept answers through the VIP ($1)" "$(jq .ok "$T/kept.out")" 20
}
o0=$(opens)
t_check "h1 applies kept" kept 1 1
ck0=$(metric 1 dmsc_etcd_changed_key_applies_total)
t_check "and a change of it" kept 1 2
t_check "which took the view of the changed key only (changed-key applies: $ck0, then more)" \
	test "$(metric 1 dmsc_etcd_changed_key_applies_total)" -gt "$ck0"
t_eq "through the maps it held open (opened $o0 times, none since)" "$(opens)" "$o0"
svcmap=$H1/maps/dmsc_services
id0=$(bpftool map show pinned "$svcmap" -j | jq .id)
bpftool map show pinned "$svcmap" -j |
	jq -r '"type \(.type) key \(.bytes_key) value \(.bytes_value) entries \(.max_entries) flags \(.flags)"' >"$T/svcmap.def"
# shellcheck disable=SC2046
bpftool map create "${svcmap}_new" $(cat "$T/svcmap.def") name dmsc_services &&
	mv "${svcmap}_new" "$svcmap" &&
	DMSC_PIN_DIR=$H1 "$CTL" install --cgroup "$CG1" >"$T/reinstall.out" 2>&1
id1=$(bpftool map show pinned "$svcmap" -j | jq .id)
t_check "the services map was re-created (map id $id0 -> $id1) and the programs moved to it" \
	test "$id1" != "$id0" -a "$(names "$H1")" = '[]'
t_check "a change reaches the re-created map" kept 2 1
t_eq "h1 opened the maps afresh for it" "$(opens)" $((o0 + 1))
kept_answers "the re-created map"
DMSC_PIN_DIR=$H1 "$CTL" uninstall >/dev/null 2>&1
DMSC_PIN_DIR=$H1 "$CTL" install --cgroup "$CG1" >>"$T/reinstall.out" 2>&1
t_check "after an uninstall and an install, a change reaches the new maps" kept 3 1
t_eq "h1 opened them afresh for it" "$(opens)" $((o0 + 2))
kept_answers "the new maps"
o1=$(opens) h1=$(t_nlines "$T/h1.log" '^dmscd: applied .*\(changed\)')
kill -HUP "$D1"
t_check "SIGHUP applies" t_wait_lines "$T/h1.log" '^dmscd: applied .*\(changed\)' $((h1 + 1)) 20
t_check "the whole view, after applies of changed keys, finds the maps as they should be: $(grep -E '^dmscd: applied .*\(changed\)' "$T/h1.log" | tail -n 1)" \
	grep -qE '\(changed\): 1 service, 0 changes, 0 map entries written' <(grep -E '^dmscd: applied .*\(changed\)' "$T/h1.log" | tail -n 1)
t_eq "and opens the maps afresh" "$(opens)" $((o1 + 1))
publish "$T/empty.json" --namespace a >/dev/null
t_check "h1's maps drop kept" t_wait 20 test "$(names "$H1")" = '[]'

# 7. A 3-member cluster loses its leader under a stream of publishes: h1,
# given the three endpoints, converges to the last revision.
kill -TERM "$D1"; wait "$D1" 2>/dev/null; D1=
etcd_stop
CURLS=() PEERS=() cluster=
for m in 0 1 2; do
	CURLS[m]=http://127.0.0.1:$(free_port) && PEERS[m]=http://127.0.0.1:$(free_port) ||
		{ t_fail "free ports for the cluster"; t_summary; exit 1; }
	cluster+=${cluster:+,}m$m=${PEERS[m]}
done
for m in 0 1 2; do
	etcd --name "m$m" --data-dir "$T/cluster$m" --listen-client-urls "${CURLS[m]}" \
		--advertise-client-urls "${CURLS[m]}" --listen-peer-urls "${PEERS[m]}" \
		--initial-advertise-peer-urls "${PEERS[m]}" --initial-cluster "$cluster" \
		--initial-cluster-token "$P" --heartbeat-interval 50 --election-timeout 500 \
		>>"$T/cluster$m.log" 2>&1 &
	MPIDS[m]=$!
done
ALL=$(IFS=,; echo "${CURLS[*]}")
healthy() { curl -sf --max-time 1 "$1/health" | grep -q '"health":"true"'; }
t_check "a 3-member etcd cluster is up" t_wait 30 healthy "${CURLS[0]}"
leader() {
	local m
	for m in 0 1 2; do
		curl -sf --max-time 1 "${CURLS[m]}/v3/maintenance/status" -d '{}' |
			jq -e '.leader == .header.member_id' >/dev/null 2>&1 && { echo "$m"; return 0; }
	done
	return 1
}
L=$(t_wait 10 leader >/dev/null && leader)
t_check "the cluster has a leader (m${L:-?})" test -n "$L"
# h1 watches through the leader first, so that losing it cuts its stream
ORDERED=${CURLS[${L:-0}]}
for m in 0 1 2; do [[ $m != "${L:-0}" ]] && ORDERED+=,${CURLS[m]}; done
DMSC_PIN_DIR=$H1 "$DMSCD" --etcd "$ORDERED" --namespace a --cgroup "$CG1" --metrics 127.0.0.1:0 \
	--drop-delay-ms 50 >>"$T/h1.log" 2>&1 &
D1=$!
c0=$(t_nlines "$T/h1.log" 'etcd: connected to')
t_check "h1 connects to the leader" t_wait_lines "$T/h1.log" "etcd: connected to ${CURLS[${L:-0}]}" 1 20
ok=0 last=
for ((w = 1; w <= 30; w++)); do
	policy "$T/c.json" reviews "198.18.1.2:$w 198.18.1.3:1"
	[[ $w == 10 && -n $L ]] && { kill -KILL "${MPIDS[L]}"; wait "${MPIDS[L]}" 2>/dev/null; }
	# a publish during the election may fail: retried, bounded
	for ((r = 0; r < 40; r++)); do
		"$CTL" publish "$T/c.json" --namespace a --etcd "$ALL" >"$T/c.out" 2>&1 && break
		sleep 0.1
	done
	grep -q '^published' "$T/c.out" && ok=$((ok + 1)) && last=$w
done
t_eq "30 publishes through the leader's loss" "$ok" 30
t_check "h1 lost its stream and reconnected to another member" \
	t_wait_lines "$T/h1.log" 'etcd: connected to' $((c0 + 2)) 20
lastrev=$("$CTL" -o json get --etcd "$ALL" --namespace a | jq .revision)
t_check "h1 reached revision $lastrev" t_wait 20 bash -c \
	"curl -sS --max-time 2 '$(grep -o 'http://[0-9.:]*/metrics' "$T/h1.log" | tail -n 1)' |
	 awk '\$1 == \"dmsc_etcd_revision\" { exit !(\$2 >= $lastrev) }'"
t_eq "h1's maps hold the last weights (30:1 -> 124 and 4 of 128 slots)" \
	"$(DMSC_PIN_DIR=$H1 "$CTL" show services -o json | jq -c '[.services[] | select(.name == "reviews") | .backends[].slots]')" \
	"[124,4]"

# 8. http services from etcd reach dmsc-l7 (h3, namespace web); a route
# change published later reaches the helper too.
WEB=198.19.0.20
web_policy() {
	cat >"$T/web.json" <<JSON
{ "services": [ { "name": "web", "vip": "$WEB", "port": 80, "protocol": "http",
  "backends": [ { "address": "198.18.1.2", "port": 8080, "labels": { "version": "v1" } },
                { "address": "198.18.1.3", "port": 8080, "labels": { "version": "v2" } } ],
  "routes": [ { "match": { "path_prefix": "/canary/" }, "backends": { "version": "$1" } } ] } ] }
JSON
}
web_policy v2
t_wait 10 "$CTL" publish "$T/web.json" --namespace web --etcd "$ALL" >/dev/null 2>&1
# dmscd stays in the root namespace (etcd is on its loopback); the helper
# it starts listens in the node namespace, through a wrapper
printf '#!/bin/sh\nexec nsenter --net=/run/netns/%sn %s "$@"\n' "$P" "$BIN/dmsc-l7" >"$T/l7-in-node"
chmod 755 "$T/l7-in-node"
DMSC_PIN_DIR="$T/bpffs/h3" "$DMSCD" --etcd "$ALL" --namespace web --cgroup "$CG3" \
	--l7-listen 198.18.0.1:15001 --l7-binary "$T/l7-in-node" --metrics 127.0.0.1:0 >>"$T/h3.log" 2>&1 &
D3=$!
canary() { dmsc_run_in_cgroup "$CG3" dmsc_net_exec c1 curl -sS --max-time 2 "http://$WEB/canary/x" 2>/dev/null; }
routes_to() { [[ $(canary) == "$1" ]]; }
t_check "an http service from etcd is routed by dmsc-l7 (/canary/ -> v2)" t_wait 20 routes_to v2
t_eq "every /canary/ request goes to v2" "$(for i in 1 2 3 4 5 6; do canary; done | sort -u | tr '\n' ' ')" "v2 "
ck3=$(metric 3 dmsc_etcd_changed_key_applies_total)
web_policy v1
t_wait 10 "$CTL" publish "$T/web.json" --namespace web --etcd "$ALL" >/dev/null 2>&1
t_check "a route change published to etcd reaches dmsc-l7 (/canary/ -> v1)" t_wait 20 routes_to v1
# (docs/design.md decision 61) an http service's change takes the view of
# the changed keys with the services kept parsed, not the whole store; a
# plain service's change beside it the view of that key alone, and the
# helper keeps running as it is
ck3_above() { [[ $(metric 3 dmsc_etcd_changed_key_applies_total) -gt $1 ]]; }
t_check "through a view of the changed key (changed-key applies: $ck3, then more)" \
	t_wait 30 ck3_above "$ck3"
# plain WEIGHT: web and a plain tcp service beside it, published to web
plain() {
	policy "$T/plain.json" plain "198.18.1.2:$1 198.18.1.3:1"
	sed -i 's/198.19.0.10/198.19.0.21/' "$T/plain.json"
	jq -s '{services: (.[0].services + .[1].services)}' "$T/web.json" "$T/plain.json" >"$T/web2.json"
	t_wait 10 "$CTL" publish "$T/web2.json" --namespace web --etcd "$ALL" >/dev/null 2>&1
	t_wait 20 plain_is "[$1]"
}
plain_is() {
	[[ $(DMSC_PIN_DIR="$T/bpffs/h3" "$CTL" show services -o json |
		jq -c '[.services[] | select(.name == "plain") | .backends[0].weight]') == "$1" ]]
}
t_check "h3 applies a plain service beside web" plain 1
ck3=$(metric 3 dmsc_etcd_changed_key_applies_total) r3=$(t_nlines "$T/h3.log" 'dmsc-l7: replacing it')
t_check "and a change of its weight" plain 2
t_check "through a view of that key (changed-key applies: $ck3, then more)" \
	t_wait 30 ck3_above "$ck3"
t_eq "dmsc-l7 was not replaced for it" "$(t_nlines "$T/h3.log" 'dmsc-l7: replacing it')" "$r3"
t_check "and still routes /canary/ to v1" routes_to v1

# 9. TLS: etcd asks every client for a certificate signed by its CA
# (certificates made here, for 127.0.0.1). Publish, watch and dmscd work
# with one; a CA that did not sign etcd's certificate, no client
# certificate, or one of another CA are refused with the cause named, and
# h2's datapath stays as it was.
X=$T/tls
mkdir -p "$X"
ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
	-subj "/CN=$1" -keyout "$X/$1.key" -out "$X/$1.crt" 2>/dev/null; }
# cert NAME CA USAGE [SAN]
cert() {
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$1" \
		-keyout "$X/$1.key" -out "$X/$1.csr" 2>/dev/null &&
		openssl x509 -req -in "$X/$1.csr" -CA "$X/$2.crt" -CAkey "$X/$2.key" \
			-CAcreateserial -days 1 -out "$X/$1.crt" \
			-extfile <(printf 'extendedKeyUsage=%s\n%s' "$3" "${4:+subjectAltName=$4}") 2>/dev/null
}
t_check "certificates: a CA, etcd's (127.0.0.1), a client's; another CA and its client" \
	bash -c "$(declare -f ca cert); X=$X; ca ca && cert etcd ca serverAuth,clientAuth IP:127.0.0.1 &&
		cert client ca clientAuth && ca otherca && cert otherclient otherca clientAuth"
SPORT=$(free_port) && SPEER=$(free_port) || { t_fail "free ports for etcd over TLS"; t_summary; exit 1; }
SURL=https://127.0.0.1:$SPORT
etcd_run dmsc-tls "$T/etcd-tls" "$SURL" "$SPEER" "$T/etcd-tls.log" --cert-file "$X/etcd.crt" \
	--key-file "$X/etcd.key" --trusted-ca-file "$X/ca.crt" --client-cert-auth
MPIDS+=("$ETCD_PID")
GOOD=(--etcd-cacert "$X/ca.crt" --etcd-cert "$X/client.crt" --etcd-key "$X/client.key")
t_check "etcd serves https on $SURL and asks for client certificates" \
	etcd_healthy "$SURL" 20 --cacert "$X/ca.crt" --cert "$X/client.crt" --key "$X/client.key"
t_check "plain curl without a client certificate is refused by etcd itself" \
	bash -c "! curl -sf --max-time 2 --cacert '$X/ca.crt' '$SURL/health' -o /dev/null"
policy "$T/tls.json" solo "198.18.1.3:1"
sed -i 's/198.19.0.10/198.19.0.13/' "$T/tls.json"
out=$("$CTL" publish "$T/tls.json" --namespace b --etcd "$SURL" "${GOOD[@]}" 2>&1)
t_check "publish over https with a client certificate: $out" grep -q '^published 1 change' <<<"$out"
out=$("$CTL" watch --namespace b --etcd "$SURL" "${GOOD[@]}" --revision 1 --count 1 --timeout 10 2>&1)
t_check "watch over https with a client certificate: $out" grep -qE '^[0-9]+ put /dmsc/ns/b/services/solo' <<<"$out"
# refused: the cause named
out=$("$CTL" get --namespace b --etcd "$SURL" --etcd-cacert "$X/otherca.crt" \
	--etcd-cert "$X/client.crt" --etcd-key "$X/client.key" 2>&1)
t_check "a CA that did not sign etcd's certificate is refused, named: $out" \
	grep -q "etcd's certificate is not trusted .*$X/otherca.crt names the CA" <<<"$out"
out=$("$CTL" get --namespace b --etcd "$SURL" --etcd-cacert "$X/ca.crt" 2>&1)
t_check "no client certificate is refused, named: $out" \
	grep -qE "etcd refused the connection's client certificate.*give --etcd-cert FILE and --etcd-key FILE" <<<"$out"
out=$("$CTL" publish "$T/tls.json" --namespace b --etcd "$SURL" --etcd-cacert "$X/ca.crt" \
	--etcd-cert "$X/otherclient.crt" --etcd-key "$X/otherclient.key" 2>&1)
t_check "a client certificate of another CA is refused, named: $out" \
	grep -qE "etcd refused the connection's client certificate.*signed by a CA etcd trusts" <<<"$out"
out=$("$CTL" watch --namespace b --etcd "$SURL" --etcd-cacert "$X/ca.crt" --count 1 --timeout 5 2>&1)
t_check "watch without a client certificate is refused, named: $out" \
	grep -qE "etcd refused the connection's client certificate" <<<"$out"
# dmscd: h2 with a wrong CA keeps its datapath; with the right one it
# applies solo's new backend from the https etcd
kill -TERM "$D2"; wait "$D2" 2>/dev/null; D2=
DMSC_PIN_DIR=$H2 "$DMSCD" --etcd "$SURL" --namespace b --metrics 127.0.0.1:0 \
	--etcd-cacert "$X/otherca.crt" --etcd-cert "$X/client.crt" --etcd-key "$X/client.key" \
	>>"$T/h2.log" 2>&1 &
D2=$!
t_check "dmscd with a wrong CA says why it cannot reach etcd" \
	t_wait_lines "$T/h2.log" "^dmscd: etcd: .*etcd's certificate is not trusted.*; next try in" 1 20
probe 2 --connect 198.19.0.13:9080 --count 20 >"$T/tls-intact.json"
t_eq "h2's datapath is intact meanwhile: solo still answers (v1)" \
	"$(jq -c '[.ok, (.backends.v1 // 0)]' "$T/tls-intact.json")" "[20,20]"
kill -TERM "$D2"; wait "$D2" 2>/dev/null; D2=
a2=$(applied 2)
DMSC_PIN_DIR=$H2 "$DMSCD" --etcd "$SURL" --namespace b --metrics 127.0.0.1:0 "${GOOD[@]}" \
	>>"$T/h2.log" 2>&1 &
D2=$!
t_check "dmscd reads etcd over https with its client certificate" after_apply 2 "$a2"
t_eq "h2's maps hold solo's backend from the https etcd" \
	"$(DMSC_PIN_DIR=$H2 "$CTL" show services -o json | jq -c '[.services[] | select(.name == "solo") | .backends[].address]')" \
	'["198.18.1.3:9080"]'
probe 2 --connect 198.19.0.13:9080 --count 20 >"$T/tls-new.json"
t_eq "and connections follow it (v2)" "$(jq -c '[.ok, (.backends.v2 // 0)]' "$T/tls-new.json")" "[20,20]"
t_summary
