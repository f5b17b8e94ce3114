#!/usr/bin/env bash
# The control plane with a real etcd (make bench; docs/bench.md): 20
# simulated hosts (each a dmscd with its own pin directory on a private BPF
# filesystem and its own test cgroup: real programs, real map writes),
# 10,000 services in 100 namespaces, each host subscribed to 5 (ns000,
# which every host shares, and 4 of its own). It prints, for one service
# change: the time from the publish's transaction to the map write on
# every subscribed host (dmscd's own timestamp of the apply, dmsc_etcd_
# applied_timestamp_seconds; docs/design.md decision 43) and the CPU time
# it costs etcd and each dmscd, the bytes each subscribed and each other host received and the
# map entries written (dmscd's counters); beside it what a full push
# costs; map entries written by a restart against an unchanged etcd; and
# dmscd's memory holding 100,000 services from etcd. Writes
# build/bench-etcd.json. Figures only: nothing here passes or fails on them.
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$TOP/build}
OUT=$BUILD/bench-etcd.json
HOSTS=${BENCH_ETCD_HOSTS:-20}
NS=${BENCH_ETCD_NAMESPACES:-100}
PER=${BENCH_ETCD_PER_NAMESPACE:-100}
CHANGES=${BENCH_ETCD_CHANGES:-50}
BIG=${BENCH_ETCD_BIG:-100000} # services held by one dmscd, in 10 namespaces
PY=/usr/bin/python3
HELPER=$TOP/scripts/bench-etcd.py
. "$TOP/tests/lib/kernel.sh"
. "$TOP/tests/lib/etcd.sh"

if [[ $(id -u) -ne 0 ]]; then
	echo "bench-etcd: needs root (BPF maps); skipped"
	exit 0
fi
if ! command -v etcd >/dev/null; then
	echo "bench-etcd: etcd is not installed (scripts/install-deps.sh); skipped"
	exit 0
fi
if ((NS < 1 + 4 * HOSTS)); then
	echo "bench-etcd: $HOSTS hosts need $((1 + 4 * HOSTS)) namespaces or more"
	exit 1
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/dmsc-bench-etcd.XXXXXX")
CGP=
EPID=
declare -A DPID
cleanup() {
	local h
	for h in "${!DPID[@]}"; do
		kill -KILL "${DPID[$h]}" 2>/dev/null && wait "${DPID[$h]}" 2>/dev/null
	done
	dmsc_stop TERM "$EPID"
	for h in "$T"/bpffs/*; do
		[[ -d $h ]] && DMSC_PIN_DIR=$h "$BUILD/dmscctl" uninstall >/dev/null 2>&1
	done
	mountpoint -q "$T/bpffs" && umount "$T/bpffs"
	if [[ -n $CGP && -d $CGP ]]; then
		rmdir "$CGP"/* 2>/dev/null
		rmdir "$CGP"
	fi
	[[ -n ${EDATA:-} && $EDATA == /dev/shm/dmsc-bench-etcd.* ]] && rm -rf "$EDATA"
	rm -rf "$T"
}
trap cleanup EXIT

mkdir -p "$T/bpffs" && mount -t bpf bpf "$T/bpffs" || exit 1
CG2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
CGP=$CG2/dmsc-test/bench-etcd-$$
mkdir -p "$CGP" || exit 1

CPORT=$(free_port) && PPORT=$(free_port) || exit 1
# etcd's data on tmpfs by default: its commit then costs no disk flush,
# which depends on the disk, not on dmsc (BENCH_ETCD_DATA=disk: in $T)
if [[ ${BENCH_ETCD_DATA:-tmpfs} == disk ]]; then
	EDATA=$T/etcd
else
	EDATA=$(mktemp -d /dev/shm/dmsc-bench-etcd.XXXXXX) || exit 1
fi
EURL=http://127.0.0.1:$CPORT
# 10,000 services in one transaction: etcd's limits raised for the
# 100,000-service step (etcd's defaults: 128 operations, 1.5 MiB)
etcd_run dmsc-bench "$EDATA" "$EURL" "$PPORT" "$T/etcd.log" \
	--max-txn-ops 20000 --max-request-bytes 33554432
EPID=$ETCD_PID
etcd_healthy "$EURL" 20 || { echo "etcd did not start"; tail "$T/etcd.log"; exit 1; }
echo "== control plane with etcd $(etcd --version | head -n 1 | awk '{print $3}'): $HOSTS hosts," \
	"$((NS * PER)) services in $NS namespaces, 5 namespaces per host (kernel $(uname -r);" \
	"etcd data on ${BENCH_ETCD_DATA:-tmpfs}; load average $(cut -d' ' -f1-3 /proc/loadavg))"

"$PY" "$HELPER" gen "$T/pol" "$NS" "$PER" || exit 1
t0=$EPOCHREALTIME
for ((k = 0; k < NS; k++)); do
	f=$(printf '%s/pol/ns%03d.json' "$T" "$k")
	"$BUILD/dmscctl" publish "$f" --etcd "$EURL" --namespace "$(basename "$f" .json)" >/dev/null ||
		{ echo "publish $f failed"; exit 1; }
done
echo "   published $((NS * PER)) services in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s"

# start_host NAME PIN-NAME ARGS...: a dmscd, its log $T/NAME.log
start_host() {
	local h=$1
	shift
	mkdir -p "$CGP/$h"
	DMSC_PIN_DIR=$T/bpffs/$h "$BUILD/dmscd" --cgroup "$CGP/$h" --metrics 127.0.0.1:0 \
		--metrics-backends off "$@" >>"$T/$h.log" 2>&1 &
	DPID[$h]=$!
}
url_of() { grep -o 'http://[0-9.:]*/metrics' "$T/$1.log" | tail -n 1; }
applies() { grep -cE '^dmscd: applied .*\(etcd\)' "$T/$1.log" 2>/dev/null; }
# read_in HOST LINE: after line LINE of HOST's log, a read of every
# namespace and the apply after it (a large read is applied a page at a
# time before it: docs/design.md decision 61)
read_in() {
	tail -n +"$(($2 + 1))" "$T/$1.log" | grep -E '^dmscd: (etcd: read [0-9]+ namespace|applied .*\(etcd\))' |
		grep -A1 'etcd: read' | grep -q '^dmscd: applied'
}
# written_since HOST LINE: the map entries the applies after line LINE wrote
written_since() {
	tail -n +"$(($2 + 1))" "$T/$1.log" | grep -E '^dmscd: applied .*\(etcd\)' |
		sed -nE 's/.* ([0-9]+) map entr(y|ies) written.*/\1/p' | awk '{ s += $1 } END { print s + 0 }'
}
rss_kb() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/${DPID[$1]}/status"; }

: >"$T/hosts"
t0=$EPOCHREALTIME
for ((h = 0; h < HOSTS; h++)); do
	nss=ns000
	for ((j = 1; j <= 4; j++)); do nss+=,$(printf 'ns%03d' $((4 * h + j))); done
	args=()
	for n in ${nss//,/ }; do args+=(--namespace "$n"); done
	start_host "h$h" --etcd "$EURL" "${args[@]}" --max-services 1000 --max-backends 5000
	t_wait_lines "$T/h$h.log" '^dmscd: applied .*\(etcd\)' 1 120 ||
		{ echo "host h$h did not apply:"; tail -n 5 "$T/h$h.log"; exit 1; }
	echo "h$h $(url_of "h$h") $nss ${DPID[h$h]}" >>"$T/hosts"
done
echo "   $HOSTS hosts up (programs loaded, $((5 * PER)) services applied each) in" \
	"$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s"
# the full read of a host's 5 namespaces: what it receives at start
read_bytes=$(while read -r h u _; do
	curl -sS --max-time 10 "$u" | awk '$1 == "dmsc_etcd_received_bytes_total" { print $2 }'
done <"$T/hosts" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
host_rss=$(for ((h = 0; h < HOSTS; h++)); do rss_kb "h$h" VmRSS; done | sort -g |
	awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')

# BENCH_ETCD_NICE=N: etcd, the hosts and the measurement at niceness N
# (every thread) while the changes are timed: an estimate of a machine
# whose other work does not take their CPUs (docs/bench.md)
NICE=${BENCH_ETCD_NICE:-}
renice_all() {
	local p t
	for p in "$EPID" "${DPID[@]}"; do
		for t in /proc/"$p"/task/*; do
			renice -n "$1" -p "${t##*/}" >/dev/null 2>&1
		done
	done
}
measure_nice=()
if [[ -n $NICE ]]; then
	renice_all "$NICE"
	measure_nice=(nice -n "$NICE")
	echo "   timing at niceness $NICE (etcd, the hosts, the benchmark)"
fi
"${measure_nice[@]}" "$PY" "$HELPER" measure --ctl "$BUILD/dmscctl" --etcd "$EURL" --etcd-pid "$EPID" --hosts "$T/hosts" \
	--namespaces "$NS" --per "$PER" --changes "$CHANGES" --tmp "$T" >"$T/measure.json" ||
	exit 1
[[ -n $NICE ]] && renice_all 0

# Restart against an unchanged etcd: the map entries the new dmscd writes.
restart_written=
for h in h0 h1 h2; do
	[[ -n ${DPID[$h]:-} ]] || continue
	kill -KILL "${DPID[$h]}"; wait "${DPID[$h]}" 2>/dev/null
	n=$(wc -l <"$T/$h.log")
	args=()
	for ns in $(awk -v h="$h" '$1 == h { gsub(",", " ", $3); print $3 }' "$T/hosts"); do
		args+=(--namespace "$ns")
	done
	start_host "$h" --etcd "$EURL" "${args[@]}"
	t_wait 60 read_in "$h" "$n" || { echo "$h: no apply after restart"; exit 1; }
	w=$(written_since "$h" "$n")
	restart_written+=${restart_written:+,}$w
done

# A full push for comparison: the whole policy (every namespace) in one
# file to a dmscd that applies it on every change (no debounce), as a
# control plane pushing everything to every host would; one weight
# changed 5 times, time from the file's rename to the map write.
jq -s '{services: map(.services) | add}' "$T"/pol/ns*.json >"$T/all.json"
full_bytes=$(stat -c %s "$T/all.json")
start_host full --policy "$T/all.json" --debounce-ms 0 --debounce-max-ms 0 \
	--max-services $((NS * PER + 16)) --max-backends $((NS * PER * 5 + 64))
t_wait_lines "$T/full.log" '^dmscd: applied ' 1 120 || { echo "full: no apply"; tail -n 5 "$T/full.log"; exit 1; }
furl=$(url_of full)
full_ms=()
for w in 2 3 4 5 6; do
	jq -c --argjson w "$w" '.services[0].backends[1].weight = $w' "$T/all.json" >"$T/all.new"
	before=$(curl -sS --max-time 10 "$furl" | awk '$1 == "dmsc_apply_last_success_timestamp_seconds" { print $2 }')
	t0=$EPOCHREALTIME
	mv "$T/all.new" "$T/all.json"
	for ((i = 0; i < 600; i++)); do
		now=$(curl -sS --max-time 10 "$furl" | awk '$1 == "dmsc_apply_last_success_timestamp_seconds" { print $2 }')
		[[ $now != "$before" ]] && break
		sleep 0.05
	done
	full_ms+=("$(awk -v a="$t0" -v b="$now" 'BEGIN { printf "%.1f", (b - a) * 1e3 }')")
done
full_ms_p50=$(printf '%s\n' "${full_ms[@]}" | sort -g | sed -n 3p)
full_parse=$(grep -E '^dmscd: applied ' "$T/full.log" | tail -n 5 | sed -nE 's/.*parse and compile ([0-9.]+) ms.*/\1/p' | sort -g | sed -n 3p)
full_rss=$(rss_kb full VmRSS)
full_hwm=$(rss_kb full VmHWM)
for h in "${!DPID[@]}"; do
	kill -TERM "${DPID[$h]}" 2>/dev/null && wait "${DPID[$h]}" 2>/dev/null
	unset "DPID[$h]"
	DMSC_PIN_DIR=$T/bpffs/$h "$BUILD/dmscctl" uninstall >/dev/null 2>&1
done

# dmscd holding BIG services from etcd (10 namespaces); BENCH_ETCD_BIG=0
# leaves this step out.
big_pub=null big_first=null big_first_page=null big_rss=null big_hwm=null big_rss_change=null big_rss_changes=null big_restart=null
big_change_view=null big_change_apply=null big_change_written=null
if ((BIG > 0)); then
	BPER=$((BIG / 10))
	"$PY" "$HELPER" gen "$T/big" 10 "$BPER" big || exit 1
	t0=$EPOCHREALTIME
	bargs=()
	for f in "$T"/big/big*.json; do
		n=$(basename "$f" .json)
		# 10,000 services in one transaction: more than dmscctl's default 5 s
		# on a busy machine
		"$BUILD/dmscctl" publish "$f" --etcd "$EURL" --namespace "$n" --timeout 300 >"$T/pub.out" 2>&1 ||
			{ echo "publish $f failed:"; cat "$T/pub.out"; exit 1; }
		bargs+=(--namespace "$n")
	done
	big_pub=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
	t0=$EPOCHREALTIME
	start_host big --etcd "$EURL" "${bargs[@]}" --max-services $((BIG + 16)) --max-backends $((BIG * 5 + 64))
	t_wait_lines "$T/big.log" '^dmscd: applied .*\(etcd\)' 1 600 || { echo "big: no apply"; tail -n 5 "$T/big.log"; exit 1; }
	big_first_page=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
	t_wait 600 read_in big 0 || { echo "big: the read was not applied"; tail -n 5 "$T/big.log"; exit 1; }
	big_first=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
	sleep 1 # the apply's summary line comes before the read's memory is given back
	big_rss=$(rss_kb big VmRSS)
	big_hwm=$(rss_kb big VmHWM)
	# one weight changed among the 100,000: dmscd's own line for that apply
	n=$(applies big)
	jq -c '.services[0].backends[1].weight = 7' "$T/big/big000.json" >"$T/big000.json"
	"$BUILD/dmscctl" publish "$T/big000.json" --etcd "$EURL" --namespace big000 >/dev/null || exit 1
	t_wait_lines "$T/big.log" '^dmscd: applied .*\(etcd\)' $((n + 1)) 120 || { echo "big: no apply of one change"; exit 1; }
	line=$(grep -E '^dmscd: applied .*\(etcd\)' "$T/big.log" | tail -n 1)
	big_change_view=$(sed -nE 's/.*parse and compile ([0-9.]+) ms.*/\1/p' <<<"$line")
	big_change_apply=$(sed -nE 's/.* in ([0-9.]+) ms \(cpu.*/\1/p' <<<"$line")
	big_change_written=$(sed -nE 's/.* ([0-9]+) map entr(y|ies) written.*/\1/p' <<<"$line")
	sleep 1
	big_rss_change=$(rss_kb big VmRSS)
	# 4 more, one in each of 4 namespaces: the steady state
	for k in 1 2 3 4; do
		n=$(applies big)
		f=$(printf 'big%03d' "$k")
		jq -c --argjson k "$k" '.services[$k].backends[1].weight = 7' "$T/big/$f.json" >"$T/$f.json"
		"$BUILD/dmscctl" publish "$T/$f.json" --etcd "$EURL" --namespace "$f" >/dev/null || exit 1
		t_wait_lines "$T/big.log" '^dmscd: applied .*\(etcd\)' $((n + 1)) 120 || { echo "big: no apply of change $k"; exit 1; }
	done
	sleep 1
	big_rss_changes=$(rss_kb big VmRSS)
	kill -KILL "${DPID[big]}"; wait "${DPID[big]}" 2>/dev/null
	n=$(wc -l <"$T/big.log")
	start_host big --etcd "$EURL" "${bargs[@]}"
	t_wait 600 read_in big "$n" || { echo "big: no apply after restart"; exit 1; }
	big_restart=$(written_since big "$n")
fi

jq --argjson read_bytes "$read_bytes" --argjson host_rss "$host_rss" \
	--argjson restart "[$restart_written]" --argjson full_bytes "$full_bytes" \
	--argjson full_ms "$full_ms_p50" --argjson full_parse "${full_parse:-null}" \
	--argjson full_rss "$full_rss" --argjson full_hwm "$full_hwm" --argjson big "$BIG" \
	--argjson big_pub "$big_pub" --argjson big_first "$big_first" --argjson big_first_page "$big_first_page" --argjson big_rss "$big_rss" \
	--argjson big_hwm "$big_hwm" --argjson big_rss_change "$big_rss_change" --argjson big_rss_changes "$big_rss_changes" --argjson big_restart "$big_restart" --arg kernel "$(uname -r)" \
	--argjson bcv "$big_change_view" --argjson bca "$big_change_apply" --argjson bcw "$big_change_written" \
	--arg nice "$NICE" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
	'. + {kernel: $kernel, niceness: (if $nice == "" then 0 else ($nice | tonumber) end),
	      load_average_at_end: $load, host_full_read_bytes_p50: $read_bytes, host_rss_kb_p50: $host_rss,
	      restart_entries_written: $restart,
	      full_push: {bytes_per_host: $full_bytes, bytes_all_hosts: ($full_bytes * .hosts),
	                  file_change_to_maps_ms_p50: $full_ms, parse_compile_ms_p50: $full_parse,
	                  rss_kb: $full_rss, peak_kb: $full_hwm},
	      big: {services: $big, publish_s: $big_pub, start_to_first_apply_s: $big_first, start_to_first_page_applied_s: $big_first_page,
	            rss_kb: $big_rss, peak_kb: $big_hwm, rss_kb_after_one_change: $big_rss_change, rss_kb_after_five_changes: $big_rss_changes, restart_entries_written: $big_restart,
	            one_change: {view_and_digests_ms: $bcv, apply_ms: $bca, entries_written: $bcw}}}' \
	"$T/measure.json" >"$OUT" || exit 1

jq -r '
def f1: if . == null then "n/a" else . * 10 | round / 10 end;
"   one service change in ns000, subscribed by all \(.change_shared.subscribed_hosts) hosts (\(.change_shared.changes) changes):",
"     figure                                   measured      goal",
"     propagation, publish transaction -> map write:",
"       p50 / p99 (every host and change)      \(.change_shared.propagation_ms_p50 | f1) / \(.change_shared.propagation_ms_p99 | f1) ms    < 100 ms",
"       to the last of the \(.change_shared.subscribed_hosts) hosts p50 / p99    \(.change_shared.to_all_hosts_ms_p50 | f1) / \(.change_shared.to_all_hosts_ms_p99 | f1) ms    < 100 ms (p99)",
"     from the start of dmscctl publish (with its validation and read):",
"       p50 / p99 / to all hosts p99           \(.change_shared.from_dmscctl_start_ms_p50 | f1) / \(.change_shared.from_dmscctl_start_ms_p99 | f1) / \(.change_shared.from_dmscctl_start_to_all_hosts_ms_p99 | f1) ms",
"     (dmscctl publish itself, start to exit   \(.change_shared.publish_ms_p50 | f1) ms p50)",
"     from etcd sending the event (the bench watches too) to the map write:",
"       p50 / p99 / to all hosts p99            \(.change_shared.from_event_ms_p50 | f1) / \(.change_shared.from_event_ms_p99 | f1) / \(.change_shared.from_event_to_all_hosts_ms_p99 | f1) ms",
"     where the time goes, p50 / p99 (each host and change):",
(.change_shared.stages_ms | to_entries[] |
 "       \(.key | . + "                          " | .[0:26])   \(.value.p50 | f1) / \(.value.p99 | f1) ms"),
"     CPU time per change p50 / p99: etcd      \(.change_shared.cpu_ms_per_change.etcd.p50 | f1) / \(.change_shared.cpu_ms_per_change.etcd.p99 | f1) ms, each dmscd \(.change_shared.cpu_ms_per_change.dmscd_per_host.p50 | f1) / \(.change_shared.cpu_ms_per_change.dmscd_per_host.p99 | f1) ms",
"     bytes received per subscribed host       \(.change_shared.bytes_per_subscribed_host_p50) p50, \(.change_shared.bytes_per_subscribed_host_max) max    < 2048",
"     map entries written per host             \(.change_shared.entries_written_per_host_p50) p50, \(.change_shared.entries_written_per_host_max) max",
"   one service change in ns001, subscribed by \(.change_one_subscriber.subscribed_hosts) host (\(.change_one_subscriber.changes) changes):",
"     bytes received by the subscriber         \(.change_one_subscriber.bytes_per_subscribed_host_p50) p50    < 2048",
"     bytes received by the \(.change_one_subscriber.other_hosts) other hosts       \(.change_one_subscriber.bytes_to_other_hosts_total) in all    0",
"     map entries written on the other hosts   \(.change_one_subscriber.entries_written_other_hosts)    0",
"   a full push instead (the whole policy, \(.services) services, to every host):",
"     bytes per host / all \(.hosts) hosts           \(.full_push.bytes_per_host) / \(.full_push.bytes_all_hosts)",
"     one weight changed: file -> map write    \(.full_push.file_change_to_maps_ms_p50) ms p50 (parse and compile \(.full_push.parse_compile_ms_p50) ms)",
"     dmscd RSS holding it                     \(.full_push.rss_kb) kB (peak \(.full_push.peak_kb) kB)",
"     a host re-reading its 5 namespaces       \(.host_full_read_bytes_p50) bytes p50",
"   restart against an unchanged etcd: map entries written  \(.restart_entries_written | map(tostring) | join(", ")) (3 hosts), \(.big.restart_entries_written) (\(.big.services) services)    0",
"   dmscd RSS, \(.subscriptions_per_host * .services / .namespaces) services from etcd        \(.host_rss_kb_p50) kB p50",
"   dmscd RSS holding \(.big.services) services from etcd   \(.big.rss_kb) kB (peak \(.big.peak_kb) kB; all applied \(.big.start_to_first_apply_s) s after start, the first page \(.big.start_to_first_page_applied_s) s)    < 62500 kB (64 MB)",
"   one change among them: the view of the store and its digests \(.big.one_change.view_and_digests_ms) ms, the apply \(.big.one_change.apply_ms) ms, \(.big.one_change.entries_written) map entries; RSS after it \(.big.rss_kb_after_one_change) kB, after 5 \(.big.rss_kb_after_five_changes) kB    < 62500 kB (64 MB)"
' "$OUT"
echo "wrote $OUT"
