# shellcheck shell=bash
# kernel.sh: the start every kernel suite shares. Source it, then call
#   dmsc_suite_begin NAME PREFIX
# It sources assert.sh and netns.sh, exits 77 (skipped) without root, sets
# TOP BIN CTL DMSCD L7 SRV PROBE T, mounts a BPF filesystem of the suite's own (so
# its pins never meet another's) as DMSC_PIN_DIR, and sets a trap that
# removes everything: a suite with more to stop defines suite_cleanup,
# which runs first; then $LOG is kept in $KEEP_LOG (dmsc_keep_log).
KERNEL_SH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$KERNEL_SH_DIR/assert.sh"
. "$KERNEL_SH_DIR/netns.sh"
DPID= # the dmscd of dmsc_start_dmscd

# dmsc_json_backends ADDR:PORT[,WEIGHT[,VERSION]]...: a service's "backends"
# array for a policy, one backend per argument (IPv4 or IPv6: the port is
# after the last colon), with its weight and a label "version" when given:
# "$(dmsc_json_backends 198.18.1.2:8080,1,v1)".
dmsc_json_backends() {
	local b ap weight version sep="" out="["
	for b in "$@"; do
		IFS=, read -r ap weight version <<<"$b"
		out+="$sep { \"address\": \"${ap%:*}\", \"port\": ${ap##*:}"
		[[ -n $weight ]] && out+=", \"weight\": $weight"
		[[ -n $version ]] && out+=", \"labels\": { \"version\": \"$version\" }"
		out+=" }"
		sep=","
	done
	echo "$out ]"
}

# dmsc_json_http NAME VIP "BACKEND..." [FIELD...]: an http service on VIP
# port 80 for a policy, its backends as dmsc_json_backends takes them (in
# one argument, apart by spaces) and after them each FIELD, JSON text
# ("\"routes\": [ ... ]"): "$(dmsc_json_http web "$VIP" "198.18.1.2:8080 198.18.1.3:8080")".
dmsc_json_http() {
	local name=$1 vip=$2 backends f out
	read -ra backends <<<"$3"
	shift 3
	out="{ \"name\": \"$name\", \"vip\": \"$vip\", \"port\": 80, \"protocol\": \"http\","
	out+=" \"backends\": $(dmsc_json_backends "${backends[@]}")"
	for f in "$@"; do out+=", $f"; done
	echo "$out }"
}

# dmsc_stop SIGNAL PID...: signals each pid given (empty ones skipped) and
# reaps it.
dmsc_stop() {
	local sig=$1 p
	shift
	for p in "$@"; do
		[[ -n $p ]] || continue
		kill -"$sig" "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
}

# dmsc_start_dmscd SECONDS ARGS...: starts $DMSCD with ARGS (quick debounce
# and drop delay, metrics on a free port), its output appended to $LOG and
# its pid in DPID, and waits up to SECONDS for its first apply (or its
# refusal) to be logged.
dmsc_start_dmscd() {
	local secs=$1 before re='\((start)\)|not applied|apply failed'
	shift
	before=$(t_nlines "$LOG" "$re")
	"$DMSCD" --metrics 127.0.0.1:0 --debounce-ms 100 --drop-delay-ms 50 "$@" >>"$LOG" 2>&1 &
	DPID=$!
	t_wait_lines "$LOG" "$re" $((before + 1)) "$secs"
}

# dmsc_stop_dmscd [SIGNAL]: stops the dmscd of dmsc_start_dmscd (TERM).
dmsc_stop_dmscd() {
	[[ -n ${DPID:-} ]] || return 0
	dmsc_stop "${1:-TERM}" "$DPID"
	DPID=
}

# dmsc_keep_log: copies $LOG to $KEEP_LOG when both are set (to read a
# failed run's log after its cleanup).
dmsc_keep_log() {
	[[ -n ${KEEP_LOG:-} && -f ${LOG:-} ]] && cp "$LOG" "$KEEP_LOG"
}

dmsc_suite_cleanup() {
	declare -F suite_cleanup >/dev/null && suite_cleanup
	dmsc_stop_dmscd
	# dmscd's helpers outlive it (decision 80): this suite's end here
	[[ -n ${T:-} ]] && dmsc_helpers_stop "$T"
	dmsc_keep_log
	# (nothing pinned, nothing to uninstall: the suite did it, or never
	# installed; a command costs seconds in a loaded TCG guest)
	[[ -n ${DMSC_PIN_DIR:-} && -e $DMSC_PIN_DIR && -x ${CTL:-} ]] && "$CTL" uninstall >/dev/null 2>&1
	dmsc_net_cleanup
	dmsc_cgroup_cleanup
	[[ -n ${T:-} ]] && mountpoint -q "$T/bpffs" && umount "$T/bpffs"
	[[ -n ${T:-} ]] && rm -rf "$T"
}

dmsc_suite_begin() {
	P=$2 # the prefix of every namespace and cgroup the suite makes
	local name=$1
	t_need_root
	TOP=$(cd "$KERNEL_SH_DIR/../.." && pwd)
	BIN=${BIN:-$TOP/build}
	CTL=$BIN/dmscctl
	DMSCD=$BIN/dmscd
	L7=$BIN/dmsc-l7
	SRV=$BIN/tools/dmsc-testsrv
	PROBE=$BIN/tools/dmsc-probe
	T=$(mktemp -d "${TMPDIR:-/tmp}/dmsc-$name.XXXXXX")
	trap dmsc_suite_cleanup EXIT
	if ! mkdir -p "$T/bpffs" || ! mount -t bpf bpf "$T/bpffs"; then
		t_fail "mount a BPF filesystem at $T/bpffs"
		t_summary
		exit 1
	fi
	export DMSC_PIN_DIR=$T/bpffs/dmsc
	dmsc_net_init "$P" || exit 1
}
