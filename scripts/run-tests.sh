#!/usr/bin/env bash
# The whole test suite: unit and BPF tests (Criterion), the documentation checks,
# the kernel suites on the running kernel, the sanitizer suite, and a
# bounded fuzzing run.
# Prints one closing line "N passed, M failed[, K skipped]" over everything
# and exits non-zero if anything failed.
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP" || exit 1
BUILD=${BUILD:-build}

passed=0 failed=0 skipped=0
# Seconds per suite, printed at the end: where the run's time goes.
timings=()

# run_criterion NAME BINARY: a Criterion binary; its synthesis line counts.
run_criterion() {
	local name=$1 bin=$2 rc syn tested pass fail crash t0=$SECONDS
	echo "== $name"
	"$bin" --jobs 2 2>&1 | tee "$bin.log"
	rc=${PIPESTATUS[0]}
	timings+=("$((SECONDS - t0)) $name")
	syn=$(grep -o 'Tested: [0-9]* | Passing: [0-9]* | Failing: [0-9]* | Crashing: [0-9]*' "$bin.log" | tail -n 1)
	if [[ -z $syn ]]; then
		echo "$name printed no synthesis line"
		failed=$((failed + 1))
		return
	fi
	read -r tested pass fail crash < <(sed 's/[^0-9]\+/ /g' <<<"$syn")
	passed=$((passed + pass))
	failed=$((failed + fail + crash))
	# Criterion counts a skipped test as tested, neither passing nor failing.
	skipped=$((skipped + tested - pass - fail - crash))
	[[ $rc -ne 0 && $((fail + crash)) -eq 0 ]] && failed=$((failed + 1))
}

# tests/unit: pure. tests/bpf: load BPF programs and pin maps (root).
run_criterion "unit tests" "$BUILD/unit-tests"
run_criterion "BPF tests" "$BUILD/bpf-tests"

# run_suite NAME CMD...: one suite that prints "N passed, M failed" last
# and exits 77 when it cannot run (counted as skipped, never as passed).
run_suite() {
	local name=$1 rc line p f t0=$SECONDS
	shift
	echo "== $name"
	"$@" 2>&1 | tee "$BUILD/suite.log"
	rc=${PIPESTATUS[0]}
	timings+=("$((SECONDS - t0)) $name")
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$BUILD/suite.log" | tail -n 1)
	if [[ $rc -eq 77 ]]; then
		skipped=$((skipped + 1))
		return
	fi
	if [[ -z $line ]]; then
		echo "$name ended (exit $rc) without a summary line"
		failed=$((failed + 1))
		return
	fi
	read -r p _ f _ <<<"$line"
	passed=$((passed + p))
	failed=$((failed + f))
	[[ $rc -ne 0 && $f -eq 0 ]] && failed=$((failed + 1))
}

# Documentation: every page, decision and path the code and docs cite exists.
for suite in tests/docs/test_*.sh; do
	run_suite "$suite" "$suite"
done

for suite in tests/kernel/test_*.sh; do
	run_suite "$suite" "$suite"
done

# Sanitizers: unit tests and dmscctl under ASan+UBSan, valgrind (make asan).
for suite in tests/sanitize/test_*.sh; do
	run_suite "$suite" "$suite"
done

# Fuzzing, bounded: each harness FUZZ_TEST_SECONDS (make fuzz-build; the
# long run is `make fuzz`), after its regression inputs.
mapfile -t fuzz_names < <(for f in tests/fuzz/fuzz_*.c; do
	[[ -e $f ]] && basename "$f" .c | sed 's/^fuzz_//'
done)
if [[ ${#fuzz_names[@]} -gt 0 ]]; then
	run_suite "fuzzing, ${FUZZ_TEST_SECONDS:-30} s per harness" \
		scripts/fuzz.sh "${FUZZ_TEST_SECONDS:-30}" "${fuzz_names[@]}"
fi

echo "== seconds per suite, slowest first"
printf '%s\n' "${timings[@]}" | sort -n -r | awk '{ printf "%6d s  ", $1; $1 = ""; print substr($0, 2) }'
echo "== all suites"
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
[[ $failed -eq 0 ]]
