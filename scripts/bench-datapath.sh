#!/usr/bin/env bash
# make bench: the same-host datapath, side by side, in one run.
#
# Two workloads in different network namespaces of this host (c: client,
# 198.18.0.2; s: server, 198.18.1.2) talk four ways:
#   a  direct TCP, no dmsc (client outside the mesh cgroup)
#   b  through a dmsc VIP with the same-host fast path (both in the mesh)
#   c  through one HAProxy TCP hop (in the server's namespace)
#   d  through two HAProxy hops (one in each namespace: a sidecar pair)
# For each: request/response round-trip p50/p99 at 64 B and 1 KiB (sockperf
# ping-pong, full RTT), bulk throughput (iperf3), and CPU time per request
# (every process of the benchmark runs in one cgroup; its cpu.stat usage
# over the ping-pong run divided by the round trips).
#
# The four ways run interleaved, ROUNDS times; each figure is the median of
# its rounds. It prints a table of absolute figures and of ratios to (a),
# writes the same as JSON, draws a PNG chart, and never fails on speed: a
# missed goal is printed, the exit code only says whether the benchmark ran.
#
# CPU idle: while it runs, the benchmark asks for a CPU wake-up latency of 0
# (PM QoS, /dev/cpu_dma_latency, as tuned's latency-performance profile
# does), so idle CPUs poll instead of halting. In a virtual machine a halted
# CPU costs a VM exit on every wake-up (about 35 us on the machines dmsc is
# built on, paid by every way alike): a 64 B round trip then measured 84 us
# direct and 68 us through dmsc, and the wake-ups hid the datapath. The
# header says whether the request was held; CPU_LATENCY_QOS=0 turns it off.
#
# Environment: ROUNDS (3), RR_SECONDS (3), BULK_SECONDS (3), OUT (build/bench),
# BIN (build), CPU_LATENCY_QOS (1).
#
# --variants: instead, the study behind the fast path's bulk policy: iperf3
# with 16 KiB, 128 KiB and 1 MiB writes, direct TCP next to the fast path as
# shipped (64 MiB reader backlog bound), bounds of 1 and 16 MiB, unbounded,
# unbounded with apply_bytes 1 MiB, and unbounded with cork 64 KiB (bulk
# only: cork would hold a 64 B request for ever), plus the 64 B round trip
# where it applies.
# Writes build/bench/variants.txt.
#
# --outside: a mesh client and a server outside the mesh (no peer), with
# and without the release of such sockets (see the block below).
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
. "$TOP/scripts/bench-lib.sh" # tests/lib/kernel.sh, and steal_ticks

ROUNDS=${ROUNDS:-3}
RR_SECONDS=${RR_SECONDS:-3}
BULK_SECONDS=${BULK_SECONDS:-3}
BIN=${BIN:-$TOP/build}
OUT=${OUT:-$TOP/build/bench}
CTL=$BIN/dmscctl
P=dbn$$
T=$(mktemp -d "${TMPDIR:-/tmp}/dmsc-bench.XXXXXX")
S_ADDR=198.18.1.2
VIP_RR=198.19.0.30 VIP_BULK=198.19.0.31
RR_PORT=11111 BULK_PORT=5201 HOP_OFFSET=10000

die() {
	echo "bench: $*" >&2
	exit 1
}
[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, BPF)"
for tool in sockperf iperf3 haproxy jq gnuplot; do
	command -v "$tool" >/dev/null || die "$tool is missing: run scripts/install-deps.sh"
done
[[ -x $CTL ]] || die "$CTL is missing: run make"

trap dmsc_suite_cleanup EXIT # tests/lib/kernel.sh
trap 'exit 130' INT TERM

mkdir -p "$OUT" "$T/bpffs" && mount -t bpf bpf "$T/bpffs" || die "cannot mount a BPF filesystem"
export DMSC_PIN_DIR=$T/bpffs/dmsc

dmsc_net_init "$P" || exit 1
dmsc_net_hosts c=198.18.0.2/16 s="$S_ADDR/16" || exit 1
dmsc_cgroups BENCH=bench MESH=bench/mesh PLAIN=bench/plain || exit 1

# The PM QoS request holds while this shell keeps the file open; children
# do not inherit it (run below closes it for them).
QOS_NOTE="CPU idle as configured"
QOS_FD=
if [[ ${CPU_LATENCY_QOS:-1} != 0 ]]; then
	if exec {QOS_FD}>/dev/cpu_dma_latency 2>/dev/null && echo 0 >&"$QOS_FD"; then
		QOS_NOTE="CPU wake-up latency held at 0 (PM QoS: idle CPUs poll)"
	else
		QOS_NOTE="CPU idle as configured (/dev/cpu_dma_latency unavailable)"
		QOS_FD=
	fi
fi

run() { # CGROUP HOST cmd...
	local cg=$1 host=$2
	shift 2
	if [[ -n $QOS_FD ]]; then
		dmsc_run_in_cgroup "$cg" dmsc_net_exec "$host" "$@" {QOS_FD}>&-
	else
		dmsc_run_in_cgroup "$cg" dmsc_net_exec "$host" "$@"
	fi
}

"$CTL" install --cgroup "$MESH" >"$T/install.out" || die "dmscctl install failed"
FASTPATH_NOTE=$(sed -n 's/^same-host fast path: //p' "$T/install.out")
cat >"$T/policy.json" <<EOF
{ "services": [
  { "name": "bench-rr", "vip": "$VIP_RR", "port": $RR_PORT,
    "backends": [ { "address": "$S_ADDR", "port": $RR_PORT } ] },
  { "name": "bench-bulk", "vip": "$VIP_BULK", "port": $BULK_PORT,
    "backends": [ { "address": "$S_ADDR", "port": $BULK_PORT } ] } ] }
EOF
"$CTL" apply "$T/policy.json" >/dev/null || die "dmscctl apply failed"
# The same with bench-bulk "on": the bulk studies below measure the fast
# path itself, which auto leaves for a while after a bulk flow.
jq '.services |= map(if .name == "bench-bulk" then . + {accelerate: "on"} else . end)' \
	"$T/policy.json" >"$T/policy-on.json"

# The servers are in the mesh cgroup (so (b) pairs with them) and listen on
# every address of their namespace (so the proxies reach them on loopback).
# A client outside the mesh is never paired with them: (a), (c), (d) are
# plain TCP.
run "$MESH" s timeout 3600 sockperf sr --tcp -i 0.0.0.0 -p $RR_PORT >"$T/sockperf-sr.out" 2>&1 &
run "$MESH" s timeout 3600 iperf3 -s -p $BULK_PORT >"$T/iperf3-s.out" 2>&1 &

haproxy_cfg() { # FILE BIND_ADDR TARGET_ADDR TARGET_OFFSET
	cat >"$1" <<EOF
global
	maxconn 4096
	nbthread 1
defaults
	mode tcp
	timeout connect 5s
	timeout client 120s
	timeout server 120s
listen rr
	bind $2:$((RR_PORT + HOP_OFFSET))
	server s $3:$((RR_PORT + $4))
listen bulk
	bind $2:$((BULK_PORT + HOP_OFFSET))
	server s $3:$((BULK_PORT + $4))
EOF
}
# Server side hop: 198.18.1.2:2xxxx -> 127.0.0.1:server. Client side hop
# (the sidecar pair's first half): 127.0.0.1:2xxxx -> 198.18.1.2:2xxxx.
haproxy_cfg "$T/hop-s.cfg" "$S_ADDR" 127.0.0.1 0
haproxy_cfg "$T/hop-c.cfg" 127.0.0.1 "$S_ADDR" $HOP_OFFSET
run "$PLAIN" s timeout 3600 haproxy -db -f "$T/hop-s.cfg" >"$T/hop-s.out" 2>&1 &
run "$PLAIN" c timeout 3600 haproxy -db -f "$T/hop-c.cfg" >"$T/hop-c.out" 2>&1 &
sleep 1

# way -> cgroup of the client, address of the request/response and bulk ports
declare -A WAY_CG=([a]=$PLAIN [b]=$MESH [c]=$PLAIN [d]=$PLAIN)
declare -A WAY_RR=([a]=$S_ADDR:$RR_PORT [b]=$VIP_RR:$RR_PORT
	[c]=$S_ADDR:$((RR_PORT + HOP_OFFSET)) [d]=127.0.0.1:$((RR_PORT + HOP_OFFSET)))
declare -A WAY_BULK=([a]=$S_ADDR:$BULK_PORT [b]=$VIP_BULK:$BULK_PORT
	[c]=$S_ADDR:$((BULK_PORT + HOP_OFFSET)) [d]=127.0.0.1:$((BULK_PORT + HOP_OFFSET)))
declare -A WAY_NAME=([a]="direct TCP" [b]="dmsc fast path" [c]="1 HAProxy hop" [d]="2 HAProxy hops")
WAYS=(a b c d)

cpu_usec() { sed -n 's/^usage_usec //p' "$BENCH/cpu.stat"; }

# rr WAY SIZE: one ping-pong run; appends "way size p50 p99 avg cpu_us_per_req"
rr() {
	local way=$1 size=$2 addr=${WAY_RR[$1]} u0 u1 out n
	u0=$(cpu_usec)
	out=$(run "${WAY_CG[$way]}" c timeout $((RR_SECONDS + 20)) sockperf pp --tcp \
		-i "${addr%:*}" -p "${addr#*:}" -t "$RR_SECONDS" -m "$size" --full-rtt 2>&1)
	u1=$(cpu_usec)
	n=$(sed -n 's/.*\[Total Run\].*ReceivedMessages=\([0-9]*\).*/\1/p' <<<"$out")
	awk -v way="$way" -v size="$size" -v n="${n:-0}" -v cpu=$((u1 - u0)) '
		/percentile 50.000/ { p50 = $NF }
		/percentile 99.000/ { p99 = $NF }
		/avg-rtt=/ { sub(/.*avg-rtt=/, ""); sub(/ .*/, ""); avg = $0 }
		END { if (p50 == "" || n == 0) { print way, size, "nan nan nan nan"; exit }
		      printf "%s %s %s %s %s %.3f\n", way, size, p50, p99, avg, cpu / n }' \
		<<<"$out" >>"$T/rr.txt"
}

# bulk WAY [FILE]: one iperf3 run; appends "way gbit_per_s cpu_ms_per_GB"
bulk() {
	local way=$1 addr=${WAY_BULK[$1]} file=${2:-$T/bulk.txt} u0 u1 res
	u0=$(cpu_usec)
	res=$(run "${WAY_CG[$way]}" c timeout $((BULK_SECONDS + 20)) iperf3 -c "${addr%:*}" \
		-p "${addr#*:}" -t "$BULK_SECONDS" -J 2>/dev/null |
		jq -r '"\(.end.sum_received.bits_per_second / 1e6 | round / 1000) \(.end.sum_received.bytes)"' 2>/dev/null)
	u1=$(cpu_usec)
	awk -v way="$way" -v cpu=$((u1 - u0)) -v res="${res:-nan 0}" 'BEGIN {
		split(res, r, " ")
		if (r[1] == "nan" || r[2] + 0 == 0) { print way, "nan nan"; exit }
		printf "%s %s %.1f\n", way, r[1], cpu / 1000 / (r[2] / 1e9) }' >>"$file"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (!NR) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# iperf3 with write size LEN for WAY; prints "gbit cpu_ms_per_GB"
bulk_len() {
	local way=$1 len=$2 addr=${WAY_BULK[$1]} u0 u1 res
	u0=$(cpu_usec)
	res=$(run "${WAY_CG[$way]}" c timeout $((BULK_SECONDS + 20)) iperf3 -c "${addr%:*}" \
		-p "${addr#*:}" -t "$BULK_SECONDS" -l "$len" -J 2>/dev/null |
		jq -r '"\(.end.sum_received.bits_per_second / 1e6 | round / 1000) \(.end.sum_received.bytes)"' 2>/dev/null)
	u1=$(cpu_usec)
	awk -v cpu=$((u1 - u0)) -v res="${res:-nan 0}" 'BEGIN { split(res, r, " ")
		if (r[1] == "nan" || r[2] + 0 == 0) { print "nan nan"; exit }
		printf "%s %.0f\n", r[1], cpu / 1000 / (r[2] / 1e9) }'
}

# --first-bulk: the first bulk flow of a newly applied service (issue 16):
# TRIALS times (FIRST_BULK_TRIALS, 20), for 16 KiB and 128 KiB writes, a
# service applied afresh (accelerate auto, no history), then iperf3 for
# FIRST_BULK_SECONDS (4) direct and through its VIP, interleaved. Prints the
# ratio to direct (min/median/max) and how many first flows left the fast
# path (any fallback counter of the fresh service) and were given the
# native path back (released), the times the reader's TCP pruned its queue
# over its buffer (TcpExtPruneCalled + TcpExtTCPRcvQDrop in the server's
# namespace, summed over the first flows), the host's load average, the CPU
# time the hypervisor stole (per trial and in all; the distribution once
# more over the trials with at most FIRST_BULK_QUIET % stolen, 5), and the
# noise floor. A first flow's ratio is to the mean of the direct runs of
# its write size right before and right after it (one more direct run per size
# closes the series), so a slow moment of the shared host weighs on both
# sides alike; the noise floor is the same estimator with no fast path in
# it: each direct run against the mean of the direct runs before and after
# it. FIRST_BULK_COMPARE=1 adds, in each trial, the same with
# DMSC_FP_NO_RELEASE=1 (a writer that left stays on tcp_bpf's path, as
# before the native path came back); FIRST_BULK_COMPARE=whole, with
# DMSC_FP_WHOLE_FIRST=1 (a first message goes whole into its reader's empty
# queue, as before docs/design.md decision 72); FIRST_BULK_COMPARE=window,
# with DMSC_FP_NO_WINDOW=1 (a writer keeps no room for its reader's
# advertised window, as before decision 73). Writes
# build/bench/first-bulk.txt.
if [[ ${1:-} == --first-bulk ]]; then
	TRIALS=${FIRST_BULK_TRIALS:-20}
	FB_SECONDS=${FIRST_BULK_SECONDS:-4}
	COMPARE=${FIRST_BULK_COMPARE:-0}
	case $COMPARE in
	0) ;;
	1) CMP_ENV=DMSC_FP_NO_RELEASE=1 CMP_LABEL="without the native path back" ;;
	whole) CMP_ENV=DMSC_FP_WHOLE_FIRST=1 CMP_LABEL="first message whole" ;;
	window) CMP_ENV=DMSC_FP_NO_WINDOW=1 CMP_LABEL="without the window rule" ;;
	*) die "FIRST_BULK_COMPARE: \"$COMPARE\" is not 0, 1, whole or window" ;;
	esac
	WAY_BULK[f]=198.19.1.1:5201 WAY_CG[f]=$MESH
	: >"$T/fb.txt"
	: >"$T/fb-steal.txt" # a line per line of fb.txt: its trial's CPU stolen, in %
	FB_STEAL0=$(steal_ticks)
	FB_QUIET=${FIRST_BULK_QUIET:-5} # the most stolen, in %, of a trial counted as quiet
	{
		echo "first bulk flow of a new service, kernel $(uname -r), $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%M:%SZ); $TRIALS trials per write size, iperf3 ${FB_SECONDS}s, direct TCP interleaved; $QOS_NOTE"
		echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
		echo "fast path: $FASTPATH_NOTE"
	} | tee "$OUT/first-bulk.txt"
	# first_flow NAME LEN: applies a new service NAME, runs the first bulk
	# flow through it; prints "gbit left released"
	# An apply that only renames a service at the same VIP keeps its id,
	# its counters and its fast-path history, so each trial first removes
	# the previous trial's service: the next one is new (a new id, no
	# "bulk seen" mark). The counters are still read as differences.
	fb_counters() {
		"$CTL" stats -o json | jq -r --arg n "$1" '.services[] | select(.name == $n) | .fastpath |
			"\(.backlog_fallback + .budget_fallback + .pressure_fallback + .bulk_fallback) \(.released)"'
	}
	fb_prunes() {
		dmsc_net_exec s nstat -asz TcpExtPruneCalled TcpExtTCPRcvQDrop | awk '/^TcpExt/ { n += $2 } END { print n + 0 }'
	}
	first_flow() {
		local g l0 r0 l1 r1 p0
		jq --arg n "$1" '.services += [{ name: $n, vip: "198.19.1.1", port: 5201,
			backends: [ { address: "'"$S_ADDR"'", port: 5201 } ] }]' \
			"$T/policy.json" >"$T/policy-fb.json"
		"$CTL" apply "$T/policy.json" >/dev/null || die "dmscctl apply (first bulk, removal) failed"
		"$CTL" apply "$T/policy-fb.json" >/dev/null || die "dmscctl apply (first bulk) failed"
		read -r l0 r0 < <(fb_counters "$1")
		p0=$(fb_prunes)
		g=$(BULK_SECONDS=$FB_SECONDS bulk_len f "$2" | cut -d' ' -f1)
		read -r l1 r1 < <(fb_counters "$1")
		echo "$g $((${l1:-0} - ${l0:-0})) $((${r1:-0} - ${r0:-0})) $(($(fb_prunes) - p0))"
	}
	for ((i = 1; i <= TRIALS; i++)); do
		for len in 16K 128K; do
			st0=$(steal_ticks)
			ga=$(BULK_SECONDS=$FB_SECONDS bulk_len a "$len" | cut -d' ' -f1)
			read -r gb left rel pruned < <(first_flow "first-$i-$len" "$len")
			line="$len $ga $gb ${left:-nan} ${rel:-0} ${pruned:-0}"
			msg=$(printf 'direct %s, first flow %s Gbit/s (left %s, released %s, pruned %s)' "$ga" "$gb" "$left" "$rel" "$pruned")
			if [[ $COMPARE != 0 ]]; then
				env "$CMP_ENV" "$CTL" install --cgroup "$MESH" >/dev/null 2>&1 || die "install ($CMP_ENV) failed"
				read -r gc leftc relc prc < <(first_flow "first-$i-$len-cmp" "$len")
				"$CTL" install --cgroup "$MESH" >/dev/null 2>&1 || die "install failed"
				line="$line $gc ${leftc:-nan} ${prc:-0}"
				msg="$msg; $CMP_LABEL $gc (left $leftc, pruned $prc)"
			fi
			stolen=$(steal_share "$st0") # the trial's runs, the compared one too
			echo "$line" >>"$T/fb.txt"
			echo "${stolen%\%}" >>"$T/fb-steal.txt"
			printf '  trial %d/%d %5s: %s; CPU stolen %s\n' "$i" "$TRIALS" "$len" "$msg" "$stolen"
		done
	done
	# The direct runs that close each write size's series, then each
	# trial's direct reference: the mean of the direct runs before and
	# after it (the last column of fb.txt; nan if either failed).
	for len in 16K 128K; do
		echo "$len $(BULK_SECONDS=$FB_SECONDS bulk_len a "$len" | cut -d' ' -f1)"
	done >"$T/fb-last.txt"
	awk 'NR == FNR { last[$1] = $2; next }
		{ line[FNR] = $0; len[FNR] = $1; d[FNR] = $2; n = FNR }
		END { for (i = 1; i <= n; i++) {
			after = last[len[i]]
			for (j = i + 1; j <= n; j++) if (len[j] == len[i]) { after = d[j]; break }
			ok = d[i] + 0 > 0 && after + 0 > 0
			print line[i], ok ? sprintf("%.3f", (d[i] + after) / 2) : "nan" } }' \
		"$T/fb-last.txt" "$T/fb.txt" >"$T/fb-ref.txt"
	mv "$T/fb-ref.txt" "$T/fb.txt"
	"$CTL" apply "$T/policy.json" >/dev/null
	# summary COLUMN LEFT_COLUMN LABEL [MOST_STOLEN]: COLUMN's ratio to the
	# reference, of the trials with at most MOST_STOLEN % of the CPU stolen
	summary() {
		for len in 16K 128K; do
			awk -v len="$len" -v c="$1" -v l="$2" -v most="${4:-100}" 'NR == FNR { st[FNR] = $1; next }
				$1 == len && $NF + 0 > 0 && $c != "" && $c != "nan" && st[FNR] != "-" && st[FNR] + 0 <= most + 0 { printf "%.3f %d\n", $c / $NF, ($l > 0) }' "$T/fb-steal.txt" "$T/fb.txt" |
				sort -g | awk -v len="$len" -v label="$3" '{ r[NR] = $1; left += $2 }
					END { if (!NR) { print len ": no trial ran"; exit }
					      med = NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
					      printf "%s, %4s writes: ratio to direct min %.2fx median %.2fx max %.2fx over %d trials; %d left the fast path\n", label, len, r[1], med, r[NR], NR, left }'
		done
	}
	# noise: each direct run against the mean of the direct runs before and
	# after it, same write size (the first flows' estimator, no fast path)
	noise() {
		for len in 16K 128K; do
			awk -v len="$len" '$1 == len { d[++n] = $2 }
				END { for (i = 2; i <= n; i++) { after = i < n ? d[i + 1] : last
					if (d[i] + 0 > 0 && d[i - 1] + 0 > 0 && after + 0 > 0) printf "%.3f\n", 2 * d[i] / (d[i - 1] + after) } }' \
				last="$(awk -v len="$len" '$1 == len { print $2 }' "$T/fb-last.txt")" "$T/fb.txt" |
				sort -g | awk -v len="$len" '{ r[NR] = $1 } END { if (NR < 2) exit
					printf "noise floor, %4s writes: direct against the mean of the direct runs before and after it min %.2fx median %.2fx max %.2fx over %d runs\n", len, r[1], NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2, r[NR], NR }'
			awk -v len="$len" -v cmp="${CMP_LABEL:-}" '$1 == len { p += $6; c += $9 }
				END { printf "reader TCP prunes after a first flow left, %4s writes: %d%s\n", len, p, cmp == "" ? "" : sprintf(" (%s: %d)", cmp, c) }' "$T/fb.txt"
		done
	}
	{
		summary 3 4 "first flow"
		[[ $COMPARE != 0 ]] && summary 7 8 "first flow, $CMP_LABEL"
		# the same over the trials the hypervisor left alone: a trial with
		# CPU stolen measures the host (its share is on its line)
		summary 3 4 "first flow, trials with at most $FB_QUIET% of the CPU stolen" "$FB_QUIET"
		noise
		echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); CPU stolen by the hypervisor over the trials $(steal_share "$FB_STEAL0") (a trial's own share is on its line: a ratio whose direct or first flow ran while CPU was stolen says more of the host than of the fast path)"
		echo "goals: min >= 0.9x, median >= 1.0x direct"
	} | tee -a "$OUT/first-bulk.txt"
	echo "  columns: write direct_gbit first_gbit left released pruned [compared_gbit left pruned] direct_reference_gbit stolen_percent" >>"$OUT/first-bulk.txt"
	paste -d' ' "$T/fb.txt" "$T/fb-steal.txt" | sed 's/^/  /' >>"$OUT/first-bulk.txt"
	echo "bench: wrote $OUT/first-bulk.txt"
	exit 0
fi

# --outside: a client in the mesh and a server outside it (another host,
# a database not in the mesh: no peer, nothing to pair), on the default
# install (the socket leaves the sockhash at its first ACK, docs/design.md
# decision 88) and with DMSC_FP_NO_RELEASE=1 (it stays on tcp_bpf's path for
# its life, as before), against direct TCP from outside the mesh,
# interleaved ROUNDS times: iperf3 with 16 KiB and 128 KiB writes, and the
# 64 B round trip. Writes build/bench/outside.txt.
if [[ ${1:-} == --outside ]]; then
	OUT_PORT_RR=$((RR_PORT + 100)) OUT_PORT_BULK=$((BULK_PORT + 100)) VIP_OUT=198.19.0.32
	run "$PLAIN" s timeout 3600 sockperf sr --tcp -i "$S_ADDR" -p $OUT_PORT_RR >"$T/sockperf-out.out" 2>&1 &
	run "$PLAIN" s timeout 3600 iperf3 -s -p $OUT_PORT_BULK >"$T/iperf3-out.out" 2>&1 &
	jq --arg vip "$VIP_OUT" --arg be "$S_ADDR" --argjson rr $OUT_PORT_RR --argjson bulk $OUT_PORT_BULK \
		'.services += [{name: "out-rr", vip: $vip, port: $rr, backends: [{address: $be, port: $rr}]},
			{name: "out-bulk", vip: $vip, port: $bulk, backends: [{address: $be, port: $bulk}]}]' \
		"$T/policy.json" >"$T/policy-out.json"
	WAY_CG[o]=$PLAIN WAY_RR[o]=$S_ADDR:$OUT_PORT_RR WAY_BULK[o]=$S_ADDR:$OUT_PORT_BULK
	WAY_CG[m]=$MESH WAY_RR[m]=$VIP_OUT:$OUT_PORT_RR WAY_BULK[m]=$VIP_OUT:$OUT_PORT_BULK
	WAY_CG[n]=$MESH WAY_RR[n]=${WAY_RR[m]} WAY_BULK[n]=${WAY_BULK[m]} # m, DMSC_FP_NO_RELEASE=1
	install_as() { # ENV...: the datapath installed with that environment, the policy applied
		env "$@" "$CTL" install --cgroup "$MESH" >/dev/null 2>&1 &&
			"$CTL" apply "$T/policy-out.json" >/dev/null 2>&1 || die "install ($*) failed"
	}
	{
		echo "a server outside the mesh, kernel $(uname -r), $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%M:%SZ), load average $(cut -d' ' -f1-3 /proc/loadavg); medians of $ROUNDS rounds, ${BULK_SECONDS}s iperf3 runs; $QOS_NOTE"
		printf '%-30s %10s %10s %10s\n' "client" "16K Gbit/s" "128K Gbit/s" "p50 64B us"
	} | tee "$OUT/outside.txt"
	: >"$T/o.txt"
	: >"$T/rr.txt"
	for ((r = 1; r <= ROUNDS; r++)); do
		for way in o m n; do
			if [[ $way == n ]]; then install_as DMSC_FP_NO_RELEASE=1; else install_as; fi
			for len in 16K 128K; do
				echo "$way $len $(bulk_len "$way" "$len")" >>"$T/o.txt"
			done
			rr "$way" 64
		done
	done
	for way in o m n; do
		case $way in
		o) name="outside the mesh (direct TCP)" ;;
		m) name="in the mesh" ;;
		n) name="in the mesh, no release" ;;
		esac
		printf '%-30s %10s %10s %10s\n' "$name" \
			"$(awk -v w=$way '$1 == w && $2 == "16K" && $3 != "nan" { print $3 }' "$T/o.txt" | median)" \
			"$(awk -v w=$way '$1 == w && $2 == "128K" && $3 != "nan" { print $3 }' "$T/o.txt" | median)" \
			"$(awk -v w=$way '$1 == w && $3 != "nan" { print $3 }' "$T/rr.txt" | median)" | tee -a "$OUT/outside.txt"
	done
	"$CTL" stats -o json | jq -c '[.services[] | select(.name | startswith("out-")) | {name, fastpath: (.fastpath | {registered, no_peer, released})}]' |
		sed 's/^/  counters: /' | tee -a "$OUT/outside.txt"
	echo "bench: wrote $OUT/outside.txt"
	exit 0
fi

if [[ ${1:-} == --variants ]]; then
	VROUNDS=${ROUNDS:-2}
	"$CTL" apply "$T/policy-on.json" >/dev/null || die "dmscctl apply failed"
	{
		echo "fast path variants, kernel $(uname -r), $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%M:%SZ); medians of $VROUNDS rounds, ${BULK_SECONDS}s iperf3 runs; $QOS_NOTE"
		printf '%-34s %6s %9s %9s %6s %9s %9s %8s %8s\n' variant write "direct" "fastpath" ratio \
			"direct" "fastpath" "p50 64B" "p50 64B"
		printf '%-34s %6s %9s %9s %6s %9s %9s %8s %8s\n' "" "" "Gbit/s" "Gbit/s" "" "ms CPU/GB" "ms CPU/GB" "direct" "fastpath"
	} | tee "$OUT/variants.txt"
	for variant in "shipped: backlog bound 64 MiB|" \
		"bound 1 MiB: bulk falls back at once|DMSC_FP_BACKLOG_MAX=1048576" \
		"bound 16 MiB|DMSC_FP_BACKLOG_MAX=16777216" \
		"unbounded backlog|DMSC_FP_BACKLOG_MAX=0" \
		"unbounded + apply_bytes 1 MiB|DMSC_FP_BACKLOG_MAX=0 DMSC_FP_APPLY_BYTES=1048576" \
		"unbounded + cork 64 KiB|DMSC_FP_BACKLOG_MAX=0 DMSC_FP_CORK_BYTES=65536"; do
		name=${variant%%|*} envs=${variant#*|}
		env $envs "$CTL" install --cgroup "$MESH" >/dev/null 2>&1 || { echo "bench: install $name failed" >&2; continue; }
		p50a=nan p50b=nan
		if [[ $envs != *CORK* ]]; then
			: >"$T/rr.txt"
			for ((r = 1; r <= VROUNDS; r++)); do rr a 64; rr b 64; done
			mv "$T/rr.txt" "$T/rr.keep" 2>/dev/null
		fi
		for len in 16K 128K 1M; do
			: >"$T/v.txt"
			for ((r = 1; r <= VROUNDS; r++)); do
				echo "a $(bulk_len a "$len")" >>"$T/v.txt"
				echo "b $(bulk_len b "$len")" >>"$T/v.txt"
			done
			ga=$(awk '$1 == "a" && $2 != "nan" { print $2 }' "$T/v.txt" | median)
			gb=$(awk '$1 == "b" && $2 != "nan" { print $2 }' "$T/v.txt" | median)
			ca=$(awk '$1 == "a" && $3 != "nan" { print $3 }' "$T/v.txt" | median)
			cb=$(awk '$1 == "b" && $3 != "nan" { print $3 }' "$T/v.txt" | median)
			if [[ $len == 16K && -f $T/rr.keep ]]; then
				p50a=$(awk '$1 == "a" && $3 != "nan" { print $3 }' "$T/rr.keep" | median)
				p50b=$(awk '$1 == "b" && $3 != "nan" { print $3 }' "$T/rr.keep" | median)
				rm -f "$T/rr.keep"
			fi
			printf '%-34s %6s %9s %9s %6s %9s %9s %8s %8s\n' "$name" "$len" "$ga" "$gb" \
				"$(awk -v x="$gb" -v y="$ga" 'BEGIN { if (y + 0 == 0 || x == "nan") print "nan"; else printf "%.2f", x / y }')" \
				"$ca" "$cb" "$p50a" "$p50b" | tee -a "$OUT/variants.txt"
			p50a="" p50b=""
		done
		"$CTL" stats -o json | jq -c '[.services[] | select(.name == "bench-bulk") | .fastpath | {redirected_bytes, stack_bytes, backlog_fallback}]' |
			sed 's/^/  counters so far: /' | tee -a "$OUT/variants.txt"
	done
	echo "bench: wrote $OUT/variants.txt"
	exit 0
fi

: >"$T/rr.txt"
: >"$T/bulk.txt"
echo "bench: $ROUNDS rounds of 4 ways x (ping-pong 64 B, 1 KiB: ${RR_SECONDS}s each; iperf3: ${BULK_SECONDS}s)"
for ((r = 1; r <= ROUNDS; r++)); do
	for way in "${WAYS[@]}"; do
		printf '  round %d/%d: %s\n' "$r" "$ROUNDS" "${WAY_NAME[$way]}"
		rr "$way" 64
		rr "$way" 1024
		bulk "$way"
	done
done

# Medians per way and size.
declare -A M
for way in "${WAYS[@]}"; do
	for size in 64 1024; do
		M[$way,p50,$size]=$(awk -v w="$way" -v s="$size" '$1 == w && $2 == s && $3 != "nan" { print $3 }' "$T/rr.txt" | median)
		M[$way,p99,$size]=$(awk -v w="$way" -v s="$size" '$1 == w && $2 == s && $4 != "nan" { print $4 }' "$T/rr.txt" | median)
		M[$way,cpu,$size]=$(awk -v w="$way" -v s="$size" '$1 == w && $2 == s && $6 != "nan" { print $6 }' "$T/rr.txt" | median)
	done
	M[$way,bulk]=$(awk -v w="$way" '$1 == w && $2 != "nan" { print $2 }' "$T/bulk.txt" | median)
	M[$way,bulkcpu]=$(awk -v w="$way" '$1 == w && $3 != "nan" { print $3 }' "$T/bulk.txt" | median)
done

# Bulk once more with the reader's backlog unbounded (DMSC_FP_BACKLOG_MAX=0):
# what the fast path gives bulk when nothing sends a writer back to TCP, at
# the price of an unbounded queue at a slow reader. Not the default.
STATS_DEFAULT=$("$CTL" stats -o json | jq -c '[.services[] | {name, fastpath: (.fastpath | {paired, redirected_msgs, redirected_bytes, stack_msgs, no_peer, miss, backlog_fallback, bulk_skip})}]')
if DMSC_FP_BACKLOG_MAX=0 "$CTL" install --cgroup "$MESH" >/dev/null 2>&1 &&
	"$CTL" apply "$T/policy-on.json" >/dev/null; then
	: >"$T/bulk0.txt"
	for ((r = 1; r <= ROUNDS; r++)); do
		printf '  round %d/%d: bulk, direct and fast path with an unbounded backlog\n' "$r" "$ROUNDS"
		bulk a "$T/bulk0.txt"
		bulk b "$T/bulk0.txt"
	done
	for way in a b; do
		M[$way,bulk0]=$(awk -v w="$way" '$1 == w && $2 != "nan" { print $2 }' "$T/bulk0.txt" | median)
		M[$way,bulk0cpu]=$(awk -v w="$way" '$1 == w && $3 != "nan" { print $3 }' "$T/bulk0.txt" | median)
	done
else
	M[a,bulk0]=nan M[b,bulk0]=nan M[a,bulk0cpu]=nan M[b,bulk0cpu]=nan
fi

ratio() { awk -v x="$1" -v y="$2" 'BEGIN { if (y + 0 == 0 || x == "nan" || y == "nan") print "nan"; else printf "%.2f", x / y }'; }

KERNEL=$(uname -r)
STATS=$STATS_DEFAULT
{
	echo "dmsc datapath benchmark, kernel $KERNEL, $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "fast path: ${FASTPATH_NOTE:-unknown}; medians of $ROUNDS interleaved rounds"
	echo "$QOS_NOTE"
	echo
	printf '%-19s %8s %8s %8s %8s %8s %8s %8s %9s\n' "" "p50 64B" "p99 64B" "p50 1KiB" "p99 1KiB" \
		"bulk" "CPU/req" "CPU/req" "bulk CPU"
	printf '%-19s %8s %8s %8s %8s %8s %8s %8s %9s\n' "" "us" "us" "us" "us" "Gbit/s" "64B us" "1KiB us" "ms/GB"
	for way in "${WAYS[@]}"; do
		printf '%-19s %8s %8s %8s %8s %8s %8s %8s %9s\n' "(${way}) ${WAY_NAME[$way]}" \
			"${M[$way,p50,64]}" "${M[$way,p99,64]}" "${M[$way,p50,1024]}" "${M[$way,p99,1024]}" \
			"${M[$way,bulk]}" "${M[$way,cpu,64]}" "${M[$way,cpu,1024]}" "${M[$way,bulkcpu]}"
	done
	echo
	echo "ratio to (a) direct TCP (latency, CPU: lower is better; bulk: higher is better)"
	for way in "${WAYS[@]}"; do
		printf '%-19s %8s %8s %8s %8s %8s %8s %8s %9s\n' "(${way}) ${WAY_NAME[$way]}" \
			"$(ratio "${M[$way,p50,64]}" "${M[a,p50,64]}")" "$(ratio "${M[$way,p99,64]}" "${M[a,p99,64]}")" \
			"$(ratio "${M[$way,p50,1024]}" "${M[a,p50,1024]}")" "$(ratio "${M[$way,p99,1024]}" "${M[a,p99,1024]}")" \
			"$(ratio "${M[$way,bulk]}" "${M[a,bulk]}")" \
			"$(ratio "${M[$way,cpu,64]}" "${M[a,cpu,64]}")" "$(ratio "${M[$way,cpu,1024]}" "${M[a,cpu,1024]}")" \
			"$(ratio "${M[$way,bulkcpu]}" "${M[a,bulkcpu]}")"
	done
	echo
	echo "bulk with the reader's backlog unbounded (DMSC_FP_BACKLOG_MAX=0, accelerate on; not the default), $ROUNDS more rounds:"
	printf '  direct TCP %s Gbit/s (%s ms CPU/GB), fast path %s Gbit/s (%s ms CPU/GB): ratio %s\n' \
		"${M[a,bulk0]}" "${M[a,bulk0cpu]}" "${M[b,bulk0]}" "${M[b,bulk0cpu]}" "$(ratio "${M[b,bulk0]}" "${M[a,bulk0]}")"
	echo
	goal() { # TEXT OK
		printf '  %-66s %s\n' "$1" "$([[ $2 == 1 ]] && echo met || echo MISSED)"
	}
	le() { awk -v x="$1" -v y="$2" 'BEGIN { print (x != "nan" && y != "nan" && x <= y) ? 1 : 0 }'; }
	echo "goals (never asserted: a benchmark on a shared machine is a measurement, not a test)"
	for s in 64 1024; do
		for q in p50 p99; do
			goal "$q ${s} B through dmsc <= 0.8 x direct TCP" \
				"$(le "${M[b,$q,$s]}" "$(awk -v y="${M[a,$q,$s]}" 'BEGIN { print y * 0.8 }')")"
			goal "$q ${s} B through dmsc at least 2 x better than two HAProxy hops" \
				"$(le "$(awk -v x="${M[b,$q,$s]}" 'BEGIN { print x * 2 }')" "${M[d,$q,$s]}")"
		done
	done
	goal "bulk through dmsc >= 1.0 x direct TCP" "$(le "${M[a,bulk]}" "${M[b,bulk]}")"
	goal "bulk through dmsc at least 2 x two HAProxy hops" \
		"$(le "$(awk -v x="${M[d,bulk]}" 'BEGIN { print x * 2 }')" "${M[b,bulk]}")"
	echo
	echo "fast path counters: $STATS"
} | tee "$OUT/bench.txt"

# JSON: the same figures.
{
	for way in "${WAYS[@]}"; do
		jq -n --arg way "$way" --arg name "${WAY_NAME[$way]}" \
			--arg p50_64 "${M[$way,p50,64]}" --arg p99_64 "${M[$way,p99,64]}" \
			--arg p50_1k "${M[$way,p50,1024]}" --arg p99_1k "${M[$way,p99,1024]}" \
			--arg bulk "${M[$way,bulk]}" --arg bulkcpu "${M[$way,bulkcpu]}" --arg cpu64 "${M[$way,cpu,64]}" --arg cpu1k "${M[$way,cpu,1024]}" \
			'def n: if . == "nan" then null else tonumber end;
			 {way: $way, name: $name,
			  rr_64: {p50_us: ($p50_64 | n), p99_us: ($p99_64 | n), cpu_us_per_req: ($cpu64 | n)},
			  rr_1024: {p50_us: ($p50_1k | n), p99_us: ($p99_1k | n), cpu_us_per_req: ($cpu1k | n)},
			  bulk_gbit_s: ($bulk | n), bulk_cpu_ms_per_gb: ($bulkcpu | n)}'
	done
} | jq -s --arg kernel "$KERNEL" --arg note "${FASTPATH_NOTE:-}" --argjson rounds "$ROUNDS" --arg qos "$QOS_NOTE" \
	--argjson stats "$STATS" --arg b0a "${M[a,bulk0]}" --arg b0b "${M[b,bulk0]}" \
	--arg b0acpu "${M[a,bulk0cpu]}" --arg b0bcpu "${M[b,bulk0cpu]}" --rawfile rr "$T/rr.txt" --rawfile bulk "$T/bulk.txt" \
	'. as $w | ($w[0]) as $a |
	 def r(x; y): if x == null or y == null or y == 0 then null else ((x / y) * 100 | round) / 100 end;
	 {kernel: $kernel, fastpath: $note, rounds: $rounds, cpu_idle: $qos, ways: $w,
	  ratios_to_direct: [$w[] | {way, name,
	    rr_64_p50: r(.rr_64.p50_us; $a.rr_64.p50_us), rr_64_p99: r(.rr_64.p99_us; $a.rr_64.p99_us),
	    rr_1024_p50: r(.rr_1024.p50_us; $a.rr_1024.p50_us), rr_1024_p99: r(.rr_1024.p99_us; $a.rr_1024.p99_us),
	    bulk: r(.bulk_gbit_s; $a.bulk_gbit_s), bulk_cpu: r(.bulk_cpu_ms_per_gb; $a.bulk_cpu_ms_per_gb),
	    cpu_64: r(.rr_64.cpu_us_per_req; $a.rr_64.cpu_us_per_req),
	    cpu_1024: r(.rr_1024.cpu_us_per_req; $a.rr_1024.cpu_us_per_req)}],
	  fastpath_counters: $stats,
	  bulk_unbounded_backlog: ({direct_gbit_s: $b0a, fastpath_gbit_s: $b0b,
	    direct_cpu_ms_per_gb: $b0acpu, fastpath_cpu_ms_per_gb: $b0bcpu}
	    | map_values(if . == "nan" then null else tonumber end)),
	  raw: {rr: ($rr | split("\n") | map(select(length > 0))), bulk: ($bulk | split("\n") | map(select(length > 0)))}}' \
	>"$OUT/bench.json"

# PNG: four panels, one bar per way.
for way in "${WAYS[@]}"; do
	printf '"%s" %s %s %s %s %s %s\n' "${WAY_NAME[$way]}" "${M[$way,p50,64]}" "${M[$way,p99,64]}" \
		"${M[$way,p50,1024]}" "${M[$way,p99,1024]}" "${M[$way,bulk]}" "${M[$way,cpu,64]}"
done >"$T/chart.dat"
gnuplot <<EOF 2>"$T/gnuplot.err" || echo "bench: gnuplot failed: $(cat "$T/gnuplot.err")" >&2
set terminal pngcairo size 1400,900 font ",10"
set output "$OUT/bench.png"
set datafile missing "nan"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set grid ytics
set yrange [0:*]
set xtics rotate by -15
set key top left
set multiplot layout 2,2 title "dmsc same-host datapath, kernel $KERNEL (medians of $ROUNDS rounds)"
set logscale y
set yrange [1:*]
set title "Round trip, 64 B (us, log scale, lower is better)"
plot "$T/chart.dat" using 2:xtic(1) title "p50", "" using 3 title "p99"
set title "Round trip, 1 KiB (us, log scale, lower is better)"
plot "$T/chart.dat" using 4:xtic(1) title "p50", "" using 5 title "p99"
unset logscale y
set yrange [0:*]
set title "Bulk throughput, iperf3 (Gbit/s, higher is better)"
plot "$T/chart.dat" using 6:xtic(1) title "Gbit/s"
set title "CPU time per 64 B request (us, lower is better)"
plot "$T/chart.dat" using 7:xtic(1) title "CPU us/request"
unset multiplot
EOF
echo "bench: wrote $OUT/bench.txt, $OUT/bench.json, $OUT/bench.png"
