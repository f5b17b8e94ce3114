#!/usr/bin/env bash
# The userspace code under AddressSanitizer and UndefinedBehaviorSanitizer
# (build-asan/, `make asan`), and under valgrind: any report fails.
#   1. the unit tests (Criterion) built with ASan+UBSan
#   2. dmscctl with ASan+UBSan: check (valid, invalid, stdin, every seed of
#      the policy fuzzer), features, verifier, and as root a whole life
#      cycle on a test cgroup in a private bpffs: install, apply, diff,
#      show, stats, status, a failed apply, uninstall
#   3. valgrind (memcheck, leaks) over dmscctl check and, as root, apply;
#      the slot for dmscd's long-running paths is marked below
# Prints "ok - ..." / "not ok - ..." and "N passed, M failed". Exit 77 when
# build-asan/ is missing (skipped, never passed).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
. "$TOP/tests/lib/assert.sh"
. "$TOP/tests/lib/netns.sh"
A=$TOP/build-asan
CTL=$A/dmscctl
if [[ ! -x $CTL || ! -x $A/unit-tests || ! -x $A/bpf-tests ]]; then
	echo "skip - build-asan/ is not built (make asan)"
	exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/dmsc-asan.XXXXXX")
export ASAN_OPTIONS=halt_on_error=1:abort_on_error=0:detect_leaks=1:exitcode=99:log_path=$T/asan
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=98:log_path=$T/ubsan
# libbpf and json-c are not built with sanitizers; leaks inside them that
# are ours to free would still show up as leaks of our allocations.

cleanup() {
	[[ -n ${DMSC_PIN_DIR:-} ]] && "$TOP/build/dmscctl" uninstall >/dev/null 2>&1
	dmsc_net_cleanup
	mountpoint -q "$T/bpffs" 2>/dev/null && umount "$T/bpffs"
	rm -rf "$T"
}
trap cleanup EXIT

# no_reports [OUTPUT]: passes when no sanitizer wrote a report since the last
# call, neither to its log files nor (UBSan in an ASan build prints there) to
# the command's OUTPUT.
SANITIZER_WORDS='runtime error:|ERROR: AddressSanitizer|ERROR: LeakSanitizer|SUMMARY: (Address|UndefinedBehavior|Leak)Sanitizer'
no_reports() {
	local f found=0
	if [[ -n ${1:-} ]] && grep -Eq "$SANITIZER_WORDS" "$1"; then
		found=1
		grep -E -A 12 "$SANITIZER_WORDS" "$1" | head -n 40 | sed 's/^/#   /'
	fi
	for f in "$T"/asan.* "$T"/ubsan.*; do
		[[ -e $f ]] || continue
		found=1
		echo "# $f:" && sed 's/^/#   /' "$f" | head -n 40
		mv "$f" "$f.seen"
	done
	[[ $found -eq 0 ]]
}

# run_ctl WHAT WANT_RC ARGS...: dmscctl under the sanitizers.
run_ctl() {
	local what=$1 want=$2 rc
	shift 2
	"$CTL" "$@" >"$T/out" 2>&1
	rc=$?
	if [[ $rc -eq $want ]] && no_reports "$T/out"; then
		t_ok "$what (exit $rc)"
	else
		t_fail "$what: exit $rc, want $want"
		sed 's/^/#   /' "$T/out" | head -n 20
	fi
}

# 1. unit tests and BPF tests
for t in unit-tests bpf-tests; do
	"$A/$t" --jobs 2 >"$T/$t.log" 2>&1
	rc=$?
	syn=$(grep -o 'Tested: [0-9]* | Passing: [0-9]* | Failing: [0-9]* | Crashing: [0-9]*' "$T/$t.log" | tail -n 1)
	if [[ $rc -eq 0 ]] && no_reports "$T/$t.log"; then
		t_ok "$t under ASan+UBSan: $syn"
	else
		t_fail "$t under ASan+UBSan (exit $rc): $syn"
		grep -E 'FAIL|ERROR|runtime error' "$T/$t.log" | head -n 20
	fi
done

# 2. dmscctl
run_ctl "check a valid policy" 0 check "$TOP/policies/reviews.json"
run_ctl "check a valid policy, JSON out" 0 -o json check "$TOP/policies/reviews.json"
printf '{ "services": [ { "name": "x", "vip": "10.0.0.300", "port": "80", "backends": [], "extra": 1 } ] }' >"$T/bad.json"
run_ctl "check an invalid policy" 1 check "$T/bad.json"
run_ctl "check from standard input" 0 check - <"$TOP/policies/reviews.json"
run_ctl "check a missing file" 1 check "$T/no-such-file.json"
bad=0
for f in "$TOP"/tests/fuzz/corpus/policy/* "$TOP"/tests/fuzz/regressions/policy/*; do
	[[ -f $f ]] || continue
	"$CTL" check "$f" >"$T/out" 2>&1
	rc=$?
	if [[ $rc -gt 1 ]] || ! no_reports "$T/out"; then
		echo "# $f: exit $rc"
		bad=$((bad + 1))
	fi
done
t_eq "check every fuzzing seed and regression input without a report" "$bad" 0
run_ctl "usage error" 2 no-such-command

if [[ $(id -u) -ne 0 ]]; then
	echo "# not root: the install life cycle and valgrind apply are not run"
	t_summary
	exit $?
fi

run_ctl "features" 0 features
run_ctl "features, JSON out" 0 -o json features
run_ctl "verifier" 0 verifier

mkdir -p "$T/bpffs" && mount -t bpf bpf "$T/bpffs" || {
	t_fail "mount bpffs"
	t_summary
	exit 1
}
export DMSC_PIN_DIR=$T/bpffs/dmsc
dmsc_net_init "dsan$$" || exit 1
CG=$(dmsc_cgroup_make "dsan$$/mesh") || exit 1
run_ctl "install on a test cgroup" 0 install --cgroup "$CG"
run_ctl "install again (adopt, replace in place)" 0 install --cgroup "$CG"
run_ctl "apply" 0 apply "$TOP/policies/reviews.json"
run_ctl "diff" 0 diff "$TOP/policies/reviews.json"
run_ctl "show services" 0 -o json show services
run_ctl "stats" 0 stats
run_ctl "status" 0 status
run_ctl "status, JSON out" 0 -o json status
run_ctl "a failed apply" 1 apply "$T/bad.json"

# 3. valgrind
if command -v valgrind >/dev/null; then
	vg=(valgrind -q --error-exitcode=97 --leak-check=full --errors-for-leak-kinds=definite
		--suppressions="$HERE/valgrind.supp"
		--show-leak-kinds=definite)
	for args in "check $TOP/policies/reviews.json" "apply $TOP/policies/reviews.json" \
		"apply $T/bad.json" "-o json status"; do
		# shellcheck disable=SC2086 # args is split on purpose
		"${vg[@]}" "$TOP/build/dmscctl" $args >"$T/vg" 2>&1
		rc=$?
		if [[ $rc -ne 97 ]]; then
			t_ok "valgrind: dmscctl ${args/#$TOP\//}: no error, no definite leak"
		else
			t_fail "valgrind: dmscctl ${args/#$TOP\//}"
			grep '^==' "$T/vg" | head -n 30
		fi
	done
	# Slot for dmscd (the agent, another branch): run its watch loop under
	# valgrind for a bounded time over a few policy changes here.
else
	t_fail "valgrind is not installed (scripts/install-deps.sh installs it)"
fi

run_ctl "uninstall" 0 uninstall
t_check "no pins are left" test ! -e "$DMSC_PIN_DIR"
t_summary
