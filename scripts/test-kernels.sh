#!/usr/bin/env bash
# The kernel matrix: the kernel suites on the running kernel ("host") and
# inside virtme-ng guests booted from Debian's kernel images (5.10 bullseye,
# 6.1 bookworm, 6.12 bookworm-backports; scripts/kernels.sh), fetched into a
# cache by scripts/fetch-kernels.sh. The guest shares the host's root file
# system read-only (the build, iproute2, jq, curl), and writes its results
# to a directory of build/matrix/ given to it read-write.
#
#   scripts/test-kernels.sh [NAME...]       NAME: host 5.10 6.1 6.12 (default: all)
#
# Environment: DMSC_MATRIX_SUITES (suites to run, default test_l4.sh,
# test_features.sh, test_udp.sh, test_limits.sh, test_fastpath.sh,
# test_ipv6.sh and test_mtls_guard.sh: their kernel checks, DMSC_MATRIX),
# DMSC_MATRIX_TIMEOUT (seconds
# per guest, default 1200: a bound for a hung guest, not a speed; a guest
# takes ~4 min on an idle 2-core machine and over 15 min on a loaded one;
# CI must end within 90 min, so three hung guests may not take more than an hour),
# DMSC_MATRIX_MEMORY (default 2G), DMSC_KERNEL_CACHE (scripts/kernels.sh).
#
# Prints per kernel one line with its suites' pass/fail counts and time,
# then the verifier's figures of every program on every kernel, then
# "N passed, M failed" over all checks. A kernel that fails a check, does not
# boot, or does not report counts as failed; the exit code is then 1.
# KVM is not usable on these machines: guests run under TCG (--disable-kvm).
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP" || exit 1
. scripts/kernels.sh
BUILD=${BUILD:-build}
SUITES=${DMSC_MATRIX_SUITES:-tests/kernel/test_l4.sh tests/kernel/test_features.sh tests/kernel/test_udp.sh tests/kernel/test_limits.sh tests/kernel/test_fastpath.sh tests/kernel/test_ipv6.sh tests/kernel/test_mtls_guard.sh}
TIMEOUT=${DMSC_MATRIX_TIMEOUT:-1200}
MEMORY=${DMSC_MATRIX_MEMORY:-2G}
MATRIX=$TOP/$BUILD/matrix

names=("$@")
[[ ${#names[@]} -eq 0 ]] && names=(host "${DMSC_KERNEL_NAMES[@]}")
if [[ $(id -u) -ne 0 ]]; then
	echo "skip - the kernel matrix needs root (BPF, namespaces, cgroups)"
	exit 77
fi
for bin in dmscctl tools/dmsc-testsrv tools/dmsc-probe; do
	[[ -x $BUILD/$bin ]] || {
		echo "test-kernels: $BUILD/$bin is missing: run make first" >&2
		exit 1
	}
done

guest_pid=
cleanup() {
	# The guest runs in a process group of its own (setsid): end it, not
	# anything else.
	if [[ -n $guest_pid ]] && kill -0 "$guest_pid" 2>/dev/null; then
		kill -TERM -- "-$guest_pid" 2>/dev/null
		sleep 1
		kill -KILL -- "-$guest_pid" 2>/dev/null
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# suite_paths: absolute paths, for the guest.
suite_paths=()
for s in $SUITES; do
	suite_paths+=("$TOP/$s")
done

passed=0 failed=0
summary=()
rm -rf "$MATRIX"
mkdir -p "$MATRIX"

# report NAME OUT SECONDS: the kernel's line, and its counts added up.
report() {
	local name=$1 out=$2 secs=$3 kver s sname rc line p f kp=0 kf=0 parts=() ok=1 feat
	kver=$(cat "$out/kernel" 2>/dev/null || echo "did not boot")
	for s in $SUITES; do
		sname=$(basename "$s" .sh)
		rc=$(cat "$out/$sname.rc" 2>/dev/null || echo none)
		line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out/$sname.log" 2>/dev/null | tail -n 1)
		if [[ $rc == 77 ]]; then
			parts+=("$sname: skipped")
			ok=0
			kf=$((kf + 1))
			continue
		fi
		if [[ -z $line ]]; then
			parts+=("$sname: no result (exit $rc)")
			ok=0
			kf=$((kf + 1))
			continue
		fi
		read -r p _ f _ <<<"$line"
		[[ $rc != 0 && $f -eq 0 ]] && f=1
		kp=$((kp + p))
		kf=$((kf + f))
		[[ $f -ne 0 ]] && ok=0
		parts+=("$sname: $p passed, $f failed ($(cat "$out/$sname.seconds" 2>/dev/null)s)")
	done
	feat=$(jq -r '"features: \([.features[] | select(.present)] | length)/\(.features | length) present" +
		(if .usable then "" else ", UNUSABLE" end)' "$out/features.json" 2>/dev/null ||
		echo "features: no report")
	passed=$((passed + kp))
	failed=$((failed + kf))
	summary+=("$(printf '%-5s %-22s %s  [%s]  %s, %ds total  => %s' "$name" "$kver" \
		"$(IFS=';'; echo "${parts[*]}" | sed 's/;/; /g')" "$feat" \
		"$([[ $name == host ]] && echo "on the host" || echo "TCG guest")" "$secs" \
		"$([[ $ok -eq 1 ]] && echo PASS || echo FAIL)")")
	echo "${summary[-1]}"
}

for name in "${names[@]}"; do
	out=$MATRIX/$name
	mkdir -p "$out"
	echo "== kernel $name"
	t0=$(date +%s)
	if [[ $name == host ]]; then
		tests/matrix/guest.sh "$out" "${suite_paths[@]}" 2>&1 | tee "$out/console.log"
	else
		if ! line=$(scripts/fetch-kernels.sh "$name"); then
			echo "test-kernels: cannot fetch kernel $name" >&2
			failed=$((failed + 1))
			summary+=("$(printf '%-5s %-22s => FAIL (kernel image not fetched)' "$name" -)")
			continue
		fi
		read -r _ kver kdir <<<"$line"
		# virtme-ng: the host's root read-only, $out read-write at
		# /tmp/dmsc-matrix-out (the guest's /tmp is a tmpfs: a mount point
		# elsewhere on the read-only root is refused), no KVM.
		setsid timeout --kill-after=10 "$TIMEOUT" \
			vng --disable-kvm --run "$kdir/boot/vmlinuz-$kver" --cpus 2 --memory "$MEMORY" \
			--rwdir="/tmp/dmsc-matrix-out=$out" \
			--exec "$TOP/tests/matrix/guest.sh /tmp/dmsc-matrix-out ${suite_paths[*]}" \
			</dev/null >"$out/console.log" 2>&1 &
		guest_pid=$!
		wait "$guest_pid"
		rc=$?
		guest_pid=
		grep -v '^qemu-system-x86_64: warning: 9p' "$out/console.log"
		[[ $rc -eq 124 ]] && echo "test-kernels: guest $name timed out after ${TIMEOUT}s"
	fi
	report "$name" "$out" $(($(date +%s) - t0))
done

echo
echo "== verifier figures (dmscctl verifier): instructions in the object, processed by"
echo "   the verifier, states (total/peak), verified_insns (5.16+), xlated/jited bytes"
printf '%-5s %-20s %6s %9s %12s %8s %7s %6s\n' kernel program insns processed states verified xlated jited
for name in "${names[@]}"; do
	jq -r --arg k "$name" '.programs[] |
		[$k, .program, .insns, (if .loaded then .processed_insns else "-" end),
		 (if .loaded then "\(.total_states)/\(.peak_states)" else "-" end),
		 (if .verified_insns > 0 then .verified_insns else "n/a" end),
		 (if .loaded then .xlated_bytes else (.error // "not loaded") end), .jited_bytes] |
		@tsv' "$MATRIX/$name/verifier.json" 2>/dev/null |
		awk -F'\t' '{ printf "%-5s %-20s %6s %9s %12s %8s %7s %6s\n", $1, $2, $3, $4, $5, $6, $7, $8 }' ||
		echo "$name  no verifier report"
done

echo
echo "== kernel matrix"
printf '%s\n' "${summary[@]}"
echo "${passed} passed, ${failed} failed"
[[ $failed -eq 0 ]]
