#!/usr/bin/env bash
# `dmscctl apply` killed (SIGKILL) at random points, many times, on the
# running kernel (issue 10, item 10). Policy A has closed services (allow_from
# one cgroup, BAD) with limits; B removes most of them; C is B plus new
# services open only to another cgroup (GOOD), which take the ids that B
# freed. Each round applies A, kills an apply of B at a random point, checks
# that no service grants more than A and B do together, then applies C and
# checks the maps hold exactly C: every allow rule and backend index entry
# belongs to a service that C gives it, none under an id without a service,
# and a second apply of C writes nothing. Real connections check that BAD
# never reaches a new service and GOOD does. Last, dmscd started after a
# kill repairs the same way.
#
# The kill point: half the rounds set DMSC_TEST_KILL_AFTER_WRITES (the apply
# SIGKILLs itself after that many map writes: every point is reachable,
# deterministically); the other half send SIGKILL from outside after a
# random delay within the time a run of B takes (that delay places the
# kill; nothing waits on it).
set -u
. "$(cd "$(dirname "$0")/../lib" && pwd)/kernel.sh"
DPID=
suite_cleanup() { dmsc_stop KILL "$DPID"; }
dmsc_suite_begin crash dcr$$
command -v bpftool >/dev/null || { echo "skip - bpftool is not installed"; exit 77; }
ROUNDS=${CRASH_ROUNDS:-20}
N_A=200  # services in A, closed to all but BAD
N_KEEP=50 # of those, kept by B
N_NEW=150 # services C adds, closed to all but GOOD
dmsc_net_hosts c=198.18.0.2/16 b1=198.18.1.2/16 || exit 1
dmsc_cgroups MESH=mesh GOOD=mesh/good BAD=mesh/bad || exit 1
REL=dmsc-test/$P/mesh

dmsc_testsrv b1 b1 id 198.18.1.2:9080 600 "$T/srv.out"
dmsc_backends_ready "$T/srv.out"

# gen FIRST LAST NAME VIPNET CGROUP [LIMITS]: services FIRST..LAST-1, VIPs
# VIPNET.X.Y (VIPNET: "198.19" or "198.19.100", whose X counts from 100).
gen() {
	awk -v a="$1" -v b="$2" -v name="$3" -v net="$4" -v cg="$5" -v lim="${6:-}" 'BEGIN {
		base = 0
		if (split(net, o, ".") == 3) { base = o[3]; net = o[1] "." o[2] }
		for (i = a; i < b; i++)
			printf "%s{ \"name\": \"%s%d\", \"vip\": \"%s.%d.%d\", \"port\": 9080, " \
				"\"backends\": [ { \"address\": \"198.18.1.2\", \"port\": 9080 }, " \
				"{ \"address\": \"198.18.%d.%d\", \"port\": 9080, \"weight\": 0 } ], " \
				"\"allow_from\": [ \"%s\" ]%s }", (i > a ? ",\n" : ""), name, i, net,
				base + int(i / 250), i % 250 + 1, 2 + int(i / 250), i % 250 + 1, cg, lim
	}'
}
LIM=', "rate_limit": { "connections_per_second": 100000, "bytes_per_second": 100000000 }'
{ echo '{ "services": ['; gen 0 $N_A old 198.19 "$REL/bad" "$LIM"; echo '] }'; } >"$T/a.json"
{ echo '{ "services": ['; gen 0 $N_KEEP old 198.19 "$REL/bad" "$LIM"; echo '] }'; } >"$T/b.json"
{
	echo '{ "services": ['
	gen 0 $N_KEEP old 198.19 "$REL/bad" "$LIM"
	echo ','
	gen 0 $N_NEW new 198.19.100 "$REL/good"
	echo '] }'
} >"$T/c.json"

t_check "install" "$CTL" install --cgroup "$MESH"
MAPS=$DMSC_PIN_DIR/maps

# The allow rules in the map as "svc_id path" lines, and the ids of the
# services the map holds.
rules() {
	bpftool -j map dump pinned "$MAPS/dmsc_allow" |
		jq -r '.[] | .formatted // . | "\(.key.svc_id) \(.value.path)"' | sort
}
live_ids() {
	"$CTL" show services -o json | jq -r '.services[].id' | sort -n
}
index_ids() {
	bpftool -j map dump pinned "$MAPS/dmsc_be_index" | jq -r '.[] | .formatted // . | .value' |
		sort -n | uniq
}

# Exactly C's rules: one per service, under the service's own id (BAD for
# the kept ones, GOOD for the new ones), none under an id without a service.
check_rules_exact() {
	local what=$1 got ids orphans nbad ngood dup
	got=$(rules)
	ids=$(live_ids)
	orphans=$(awk 'NR == FNR { live[$1] = 1; next } !($1 in live)' <(echo "$ids") <(echo "$got") | wc -l)
	nbad=$(grep -c "/bad$" <<<"$got")
	ngood=$(grep -c "/good$" <<<"$got")
	dup=$(awk '{ print $1 }' <<<"$got" | uniq -d | wc -l)
	[[ $nbad -eq $N_KEEP && $ngood -eq $N_NEW && $orphans -eq 0 && $dup -eq 0 &&
		$(wc -l <<<"$got") -eq $((N_KEEP + N_NEW)) ]] && return 0
	echo "# $what: $nbad BAD rules (want $N_KEEP), $ngood GOOD (want $N_NEW), $orphans under no service, $dup services with two"
	return 1
}

if [[ -n ${CRASH_PROFILE:-} ]]; then
	time "$CTL" apply "$T/a.json" >/dev/null
	time "$CTL" apply "$T/c.json" >/dev/null
	time rules >/dev/null
	time live_ids >/dev/null
	time "$CTL" show access -o json >/dev/null
fi
# A: no kill; B: how long an uninterrupted apply takes: the process from
# start to exit (ms), and the apply itself (its writes are at its end).
"$CTL" apply "$T/a.json" >/dev/null || t_fail "apply A"
t0=$(date +%s%N)
"$CTL" apply -o json "$T/b.json" >"$T/b.json.out" || t_fail "apply B"
B_MS=$((($(date +%s%N) - t0) / 1000000))
B_WRITES=$(jq .entries_written "$T/b.json.out")
APPLY_MS=$(jq '.seconds * 1000 | floor' "$T/b.json.out")
echo "# apply A -> B: $B_MS ms ($APPLY_MS ms in the apply), $B_WRITES map writes ($N_A services, $((N_A - N_KEEP)) removed)"

fails=0 kills=0 hook_kills=0
for ((r = 1; r <= ROUNDS; r++)); do
	"$CTL" apply "$T/a.json" >/dev/null 2>&1 || { echo "# round $r: apply A failed"; fails=$((fails + 1)); continue; }
	if ((r % 2)); then
		n=$((RANDOM % (B_WRITES + 2) + 1))
		DMSC_TEST_KILL_AFTER_WRITES=$n "$CTL" apply "$T/b.json" >/dev/null 2>&1
		rc=$?
		[[ $rc -eq 137 ]] && hook_kills=$((hook_kills + 1))
	else
		# A random delay within the time a whole run of B takes places
		# the kill (nothing waits on it); an apply that finished first
		# is redone from A, at most 4 times.
		for ((try = 0; try < 4; try++)); do
			"$CTL" apply "$T/b.json" >/dev/null 2>&1 &
			pid=$!
			sleep "$(awk -v all="$B_MS" -v r="$RANDOM" 'BEGIN { printf "%.4f", all * r / 32768 / 1000 }')"
			kill -KILL "$pid" 2>/dev/null
			wait "$pid" 2>/dev/null
			rc=$?
			[[ $rc -eq 137 ]] && break
			"$CTL" apply "$T/a.json" >/dev/null 2>&1
		done
	fi
	[[ $rc -eq 137 ]] && kills=$((kills + 1))
	# Right after the kill: every live service is one of A's, closed to
	# all but BAD (A and B agree on them), with no rule for anyone else.
	if ! "$CTL" show access -o json | jq -e --arg bad "$REL/bad" \
		'[.services[] | select(.open_to_all or ([.allow[].cgroup] - [$bad] | length > 0))] | length == 0' >/dev/null; then
		echo "# round $r: after the kill, a service is open wider than A and B"
		fails=$((fails + 1))
	fi
	if ! "$CTL" apply "$T/c.json" >"$T/c.out" 2>&1; then
		echo "# round $r: apply C failed: $(cat "$T/c.out")"
		fails=$((fails + 1))
		continue
	fi
	if ! check_rules_exact "round $r"; then
		fails=$((fails + 1))
	fi
	if ((r % 4 == 0)) && ! "$CTL" apply "$T/c.json" | grep -q '^0 changes, 0 map entries'; then
		echo "# round $r: a second apply of C still writes"
		fails=$((fails + 1))
	fi
done
echo "# $ROUNDS rounds: $kills applies killed ($hook_kills by DMSC_TEST_KILL_AFTER_WRITES, $((kills - hook_kills)) from outside)"
t_eq "after each of $ROUNDS killed applies, nothing wider than A and B, and the next apply leaves exactly C" "$fails" 0
t_check "most applies were really killed ($kills of $ROUNDS)" test "$kills" -ge $((ROUNDS / 2))
t_eq "backend index entries under no service" \
	"$(awk 'NR == FNR { live[$1] = 1; next } !($1 in live)' <(live_ids) <(index_ids) | wc -l)" 0

# Real connections to the services C added (they took B's freed ids).
probe() {
	local cg=$1
	shift
	dmsc_run_in_cgroup "$cg" dmsc_net_exec c "$PROBE" --json --max-seconds 20 "$@"
}
probe "$BAD" --connect 198.19.100.1:9080 --count 5 >"$T/bad.json"
t_eq "BAD cannot connect to a new service (EPERM)" "$(jq -c '[.ok, .errors.EPERM]' "$T/bad.json")" "[0,5]"
probe "$BAD" --connect "198.19.100.$((RANDOM % (N_NEW - 1) + 2)):9080" --count 5 >"$T/bad2.json"
t_eq "...nor to another one" "$(jq -c '[.ok, .errors.EPERM]' "$T/bad2.json")" "[0,5]"
probe "$GOOD" --connect 198.19.100.1:9080 --count 5 >"$T/good.json"
t_eq "GOOD connects to it" "$(jq .ok "$T/good.json")" 5

# dmscd started after a kill: its first apply repairs, and it is in step.
"$CTL" apply "$T/a.json" >/dev/null
DMSC_TEST_KILL_AFTER_WRITES=$((B_WRITES / 2)) "$CTL" apply "$T/b.json" >/dev/null 2>&1
t_eq "an apply killed half-way by the hook" "$?" 137
t_eq "the install record says an apply was interrupted" \
	"$(bpftool -j map dump pinned "$MAPS/dmsc_install" | jq '.[0] | .formatted // . | .value.apply_in_progress')" 1
LOG=$T/dmscd.log
"$BIN/dmscd" --policy "$T/c.json" --debounce-ms 100 >"$LOG" 2>&1 &
DPID=$!
# The apply's own line ("dmscd: applied FILE (start): ..."), not any line
# that says "applied" (dmscd also says when the L7 helper would start).
for ((i = 0; i < 600; i++)); do
	grep -qE '^dmscd: (applied [^ ]+ \(|.*(apply failed|not applied))' "$LOG" && break
	sleep 0.1
done
t_check "dmscd applied C" grep -qE '^dmscd: applied [^ ]+ \(' "$LOG"
t_check "dmscd repaired what the killed apply left" grep -q 'repaired [0-9]* map entr' "$LOG"
t_eq "the mark is cleared" \
	"$(bpftool -j map dump pinned "$MAPS/dmsc_install" | jq '.[0] | .formatted // . | .value.apply_in_progress')" 0
t_check "dmscd left exactly C" check_rules_exact dmscd
probe "$BAD" --connect 198.19.100.1:9080 --count 5 >"$T/bad3.json"
t_eq "BAD still cannot connect to a new service" "$(jq -c '[.ok, .errors.EPERM]' "$T/bad3.json")" "[0,5]"
kill -TERM "$DPID"
wait "$DPID"
DPID=
t_check "dmscctl apply of C after dmscd writes nothing" \
	bash -c "'$CTL' apply '$T/c.json' | grep -q '^0 changes, 0 map entries'"

t_check "uninstall" "$CTL" uninstall
t_summary
