# shellcheck shell=bash
# assert.sh: TAP-like reporting for the shell test suites. Source it.
# Each check prints "ok - WHAT" or "not ok - WHAT" (with the reason);
# t_summary prints "N passed, M failed" and returns non-zero on a failure.

T_PASSED=0
T_FAILED=0
# With DMSC_TIMES=FILE (tests/matrix/guest.sh sets it), each check also
# appends to FILE the seconds since the suite started and since the check
# before it, then the check: where a suite's time goes. Read from the
# shell's clock, no command run.
T__T0=${EPOCHREALTIME/./}
T__PREV=$T__T0
t__time() {
	[[ -n ${DMSC_TIMES:-} ]] || return 0
	local now=${EPOCHREALTIME/./} all since
	all=$(((now - T__T0) / 100000))
	since=$(((now - T__PREV) / 100000))
	T__PREV=$now
	printf '%5d.%d %5d.%d %s\n' $((all / 10)) $((all % 10)) $((since / 10)) $((since % 10)) \
		"${1:0:100}" >>"$DMSC_TIMES"
}

t_ok() {
	T_PASSED=$((T_PASSED + 1))
	echo "ok - $*"
	t__time "ok - $*"
}

t_fail() {
	T_FAILED=$((T_FAILED + 1))
	echo "not ok - $*"
	t__time "not ok - $*"
}

# t_check WHAT CMD...: passes when CMD exits 0.
t_check() {
	local what=$1
	shift
	if "$@"; then t_ok "$what"; else t_fail "$what"; fi
}

# t_eq WHAT GOT WANT
t_eq() {
	if [[ "$2" == "$3" ]]; then t_ok "$1"; else t_fail "$1: got '$2', want '$3'"; fi
}

# t_range WHAT GOT LO HI: LO <= GOT <= HI, numbers (decimals allowed).
t_range() {
	if awk -v g="$2" -v lo="$3" -v hi="$4" 'BEGIN { exit !(g != "" && g >= lo && g <= hi) }'; then
		t_ok "$1 ($2 in [$3, $4])"
	else
		t_fail "$1: $2 not in [$3, $4]"
	fi
}

# t_share DESC HITS N PERCENT: HITS of N random picks is PERCENT% of them
# within 5 standard deviations of a binomial draw (sqrt(p(1-p)/N)). A split
# by random slots strays by chance: at 3 deviations about one check in a
# thousand fails, and with a dozen such checks on each of CI's kernels
# that is a red run in a hundred (one saw 59.5% of 200 against 70.3% +-
# 10). At 5 a chance failure is one in millions; the bound still tells a
# weight off by 5 points at 2000 picks (80/20: +- 4.5).
t_share() {
	local range
	range=$(awk -v n="$3" -v p="$4" 'BEGIN {
		q = p / 100; d = n > 0 ? 500 * sqrt(q * (1 - q) / n) : 0
		printf "%.1f %.1f", p - d, p + d }')
	t_range "$1: $4% of $3 +- 5 sd" \
		"$(awk -v h="$2" -v n="$3" 'BEGIN { printf "%.1f", (n > 0 ? 100 * h / n : 0) }')" $range
}

# t_wait SECONDS CMD...: polls CMD (every 0.05 s) until it exits 0; returns
# 1 if it has not after SECONDS. For checks whose condition becomes true a
# moment later (a server bound, a counter written, a reader woken): a fixed
# sleep is too short on a loaded machine or in a TCG guest, and wastes time
# everywhere else.
t_wait() {
	local secs=$1 end
	shift
	end=$((SECONDS + secs))
	until "$@"; do
		((SECONDS >= end)) && return 1
		sleep 0.05
	done
}

# t_nlines FILE REGEX: how many lines of FILE match REGEX (0 without FILE).
t_nlines() { grep -cE -- "$2" "$1" 2>/dev/null; }

t__has_lines() { [[ $(t_nlines "$1" "$2") -ge $3 ]]; }

# t_wait_lines FILE REGEX N SECONDS: until FILE has at least N lines
# matching REGEX (t_wait).
t_wait_lines() { t_wait "$4" t__has_lines "$1" "$2" "$3"; }

t_summary() {
	echo "${T_PASSED} passed, ${T_FAILED} failed"
	[[ $T_FAILED -eq 0 ]]
}

# t_need_root: a kernel suite without root cannot run; say so and exit 77
# (skipped), which the runner reports as skipped, never as passed.
t_need_root() {
	if [[ $(id -u) -ne 0 ]]; then
		echo "skip - needs root to load BPF programs"
		exit 77
	fi
}
