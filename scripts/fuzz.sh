#!/usr/bin/env bash
# fuzz.sh SECONDS NAME...: runs each libFuzzer harness build-fuzz/fuzz_NAME
#   1. over every input in tests/fuzz/regressions/NAME/ (inputs that once
#      crashed: each must now pass), then
#   2. for SECONDS of fuzzing, seeded from tests/fuzz/corpus/NAME/, the
#      corpus growing in build-fuzz/corpus/NAME/ (kept between runs).
# Prints one line per harness: "fuzz NAME: N runs in S s, cov C (edges of
# our code: json-c and http_parser are not instrumented), ft F, corpus K" and the last line
# "N passed, M failed". A crash leaves its input
# in build-fuzz/artifacts/; add it to tests/fuzz/regressions/NAME/ with the fix.
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP" || exit 1
SECONDS_PER=${1:?usage: fuzz.sh SECONDS NAME...}
shift
FB=build-fuzz
. "$TOP/tests/lib/assert.sh"
mkdir -p "$FB/artifacts"
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

for name in "$@"; do
	bin=$FB/fuzz_$name
	log=$FB/fuzz_$name.log
	if [[ ! -x $bin ]]; then
		t_fail "fuzz $name: $bin is not built (make fuzz-build)"
		continue
	fi
	reg=(tests/fuzz/regressions/"$name"/*)
	if [[ -e ${reg[0]} ]]; then
		if "$bin" -runs=0 "${reg[@]}" >"$log.regressions" 2>&1; then
			t_ok "fuzz $name: ${#reg[@]} regression inputs pass"
		else
			t_fail "fuzz $name: a regression input fails again:"
			grep -E 'ERROR|SUMMARY|Running:' "$log.regressions" | tail -n 5
		fi
	fi
	corpus=$FB/corpus/$name
	mkdir -p "$corpus"
	opts=(-max_total_time="$SECONDS_PER" -timeout=10 -rss_limit_mb=2048 -max_len=16384
		-print_final_stats=1 -artifact_prefix="$FB/artifacts/$name-")
	[[ -f tests/fuzz/$name.dict ]] && opts+=(-dict="tests/fuzz/$name.dict")
	t0=$(date +%s)
	"$bin" "${opts[@]}" "$corpus" "tests/fuzz/corpus/$name" >"$log" 2>&1
	rc=$?
	t=$(($(date +%s) - t0))
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
	cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
	ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
	# libFuzzer's own count: the inputs that add coverage (the folder may
	# hold more, superseded ones)
	size=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
	if [[ $rc -eq 0 ]]; then
		t_ok "fuzz $name: ${runs:-?} runs in ${t} s, cov ${cov:-?}, ft ${ft:-?}, corpus ${size:-?}"
	else
		t_fail "fuzz $name (exit $rc) after ${runs:-?} runs in ${t} s:"
		grep -E 'ERROR|SUMMARY|fuzz_[a-z]*:|artifact' "$log" | head -n 8
	fi
done
t_summary
