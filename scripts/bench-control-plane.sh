#!/usr/bin/env bash
# The control-plane benchmark (make bench): map writes and apply time for
# policies of 1,000, 10,000 and 100,000 services (build/bench-cp, on real
# maps loaded but not attached), then dmscd's resident memory with 10,000
# and 100,000 services (a real dmscd on a private BPF filesystem and a test
# cgroup; no traffic). Prints tables and writes build/bench-control-plane.json.
# Figures only: nothing here passes or fails on them.
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
. "$TOP/tests/lib/kernel.sh"
BUILD=${BUILD:-$TOP/build}
OUT=$BUILD/bench-control-plane.json
SIZES=${BENCH_CP_SIZES:-1000,10000,100000}
RSS_SIZES=${BENCH_CP_RSS_SIZES:-10000 100000}

if [[ $(id -u) -ne 0 ]]; then
	echo "bench-control-plane: needs root (BPF maps); skipped"
	exit 0
fi

echo "== control plane: apply cost (bench-cp)"
"$BUILD/bench-cp" --sizes "$SIZES" --json "$BUILD/bench-cp.json" || exit 1

T=$(mktemp -d "${TMPDIR:-/tmp}/dmsc-bench-cp.XXXXXX")
CG=
DPID=
cleanup() {
	dmsc_stop KILL "$DPID"
	[[ -e $T/bpffs/dmsc ]] && DMSC_PIN_DIR=$T/bpffs/dmsc "$BUILD/dmscctl" uninstall >/dev/null 2>&1
	mountpoint -q "$T/bpffs" && umount "$T/bpffs"
	[[ -n $CG && -d $CG ]] && rmdir "$CG"
	rm -rf "$T"
}
trap cleanup EXIT

mkdir -p "$T/bpffs" && mount -t bpf bpf "$T/bpffs" || exit 1
export DMSC_PIN_DIR=$T/bpffs/dmsc
CG2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
CG=$CG2/dmsc-test/bench-cp-$$
mkdir -p "$CG" || exit 1

echo "== dmscd: resident memory (VmRSS after the first apply, after 3 changes of one weight, after a"
echo "   metrics scrape; VmHWM: peak, during the JSON parse), median apply of the 3 changes, scrape time"
printf '%9s %10s %13s %13s %10s %17s %15s %13s %10s\n' services "rss kB" "after changes" "after scrape" "peak kB" "parse+compile ms" "change: apply" "(its cpu)" "scrape s"
rss_json=""
for n in $RSS_SIZES; do
	"$BUILD/bench-cp" --write-policy "$n" "$T/p.json" || exit 1
	for w in 7 8 9; do
		"$BUILD/bench-cp" --write-policy "$n" "$T/p$w.json" --weight "$w" || exit 1
	done
	DMSC_PIN_DIR=$T/bpffs/dmsc "$BUILD/dmscctl" uninstall >/dev/null 2>&1
	log=$T/dmscd-$n.log
	"$BUILD/dmscd" --cgroup "$CG" --policy "$T/p.json" --metrics 127.0.0.1:0 \
		--max-services $((n + n / 4 + 16)) --max-backends $((4 * n + n + 64)) >"$log" 2>&1 &
	DPID=$!
	if ! t_wait_lines "$log" '^dmscd: applied ' 1 300; then
		echo "dmscd did not apply $n services:"; tail -n 5 "$log"; exit 1
	fi
	sleep 1 # the summary line is logged before the parse's memory is given back
	rss1=$(awk '/^VmRSS/ { print $2 }' "/proc/$DPID/status")
	# Three changes of one weight; the median apply time of the three.
	k=1
	for w in 7 8 9; do
		k=$((k + 1))
		cp "$T/p$w.json" "$T/p.json.new" && mv "$T/p.json.new" "$T/p.json"
		t_wait_lines "$log" '^dmscd: applied ' $k 300 || { echo "no apply of weight $w"; exit 1; }
	done
	sleep 1
	rss2=$(awk '/^VmRSS/ { print $2 }' "/proc/$DPID/status")
	line=$(grep -E '^dmscd: applied ' "$log" | tail -n 1)
	apply_ms=$(grep -E '^dmscd: applied ' "$log" | tail -n 3 | sed -nE 's/.* in ([0-9.]+) ms \(cpu.*/\1/p' |
		sort -g | sed -n 2p)
	cpu_ms=$(grep -E '^dmscd: applied ' "$log" | tail -n 3 | sed -nE 's/.*\(cpu ([0-9.]+) ms\).*/\1/p' |
		sort -g | sed -n 2p)
	parse_ms=$(sed -nE 's/.*parse and compile ([0-9.]+) ms.*/\1/p' <<<"$line")
	written=$(sed -nE 's/.* ([0-9]+) map entr(y|ies) written.*/\1/p' <<<"$line")
	url=$(grep -o 'http://[0-9.:]*/metrics' "$log" | tail -n 1)
	scrape=$(curl -sS -o "$T/metrics.txt" -w '%{time_total}' --max-time 120 "$url")
	lines=$(wc -l <"$T/metrics.txt")
	rss3=$(awk '/^VmRSS/ { print $2 }' "/proc/$DPID/status")
	hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$DPID/status")
	printf '%9s %10s %13s %13s %10s %17s %12s ms %10s ms %10s (%s entries written; %s metric lines)\n' \
		"$n" "$rss1" "$rss2" "$rss3" "$hwm" "$parse_ms" "$apply_ms" "$cpu_ms" "$scrape" "$written" "$lines"
	kill -TERM "$DPID" && wait "$DPID"
	DPID=
	rss_json+="${rss_json:+,}{\"services\":$n,\"rss_kb\":$rss1,\"rss_kb_after_change\":$rss2,\"rss_kb_after_scrape\":$rss3,\"peak_kb\":$hwm,\"change_apply_ms\":$apply_ms,\"change_apply_cpu_ms\":$cpu_ms,\"change_parse_ms\":$parse_ms,\"change_entries_written\":$written,\"scrape_seconds\":$scrape,\"metric_lines\":$lines}"
done

jq --argjson rss "[$rss_json]" '. + { dmscd_memory: $rss }' "$BUILD/bench-cp.json" >"$OUT"
rm -f "$BUILD/bench-cp.json"
echo "wrote $OUT"
echo "goals: one change in 100,000 services under 1 ms and under 10 map entries; dmscd RSS under 20 MB (20480 kB) at 10,000 services"
