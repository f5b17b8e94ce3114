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
# DMSC_MATRIX_HOST_SUITES (the host's, default the same; empty: none),
# DMSC_MATRIX_TIMEOUT (seconds
# per guest, default 1200: a bound for a hung guest, not a speed; a guest
# takes ~4 min on an idle 2-core machine and over 15 min on a loaded one;
# CI must end within 90 min, so three hung guests may not take more than an hour),
# DMSC_MATRIX_MEMORY (default 2G), DMSC_KERNEL_CACHE (scripts/kernels.sh),
# DMSC_MATRIX_APART (suites that run in a guest of their own, beside the
# kernel's other guest: default test_fastpath.sh, which alone takes as long
# as the others together), DMSC_MATRIX_JOBS (guests booted at once, default 2) and
# DMSC_MATRIX_CPUS (vCPUs per guest; default 1 when guests run side by
# side, else 2). Measured on a 2-core machine: a guest of 2 vCPUs keeps
# about one core busy and runs no faster than one of 1 vCPU (test_l4 and
# test_limits on 5.10: 146 s, 151 s); two guests of 1 vCPU side by side
# took 164 s for both, and two of 2 vCPUs 3.4 times as long as one alone
# (their vCPU threads thrash). So the guests are uniprocessors; the host's
# own run, first and alone (its suites measure), is the SMP one.
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
# the host's own: the same unless set (CI sets none: make test ran them on
# this kernel just before; the host's row then has its features and verifier)
HOST_SUITES=${DMSC_MATRIX_HOST_SUITES-$SUITES}
APART=${DMSC_MATRIX_APART-tests/kernel/test_fastpath.sh}
TIMEOUT=${DMSC_MATRIX_TIMEOUT:-1200}
MEMORY=${DMSC_MATRIX_MEMORY:-2G}
JOBS=${DMSC_MATRIX_JOBS:-2}
CPUS=${DMSC_MATRIX_CPUS:-$(((JOBS > 1) ? 1 : 2))}
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

declare -A running=() # the guests booted and not ended: pid -> kernel name
cleanup() {
	# Each guest runs in a process group of its own (setsid): end them,
	# not anything else.
	local pid
	for pid in "${!running[@]}"; do
		kill -TERM -- "-$pid" 2>/dev/null
	done
	((${#running[@]})) && sleep 1
	for pid in "${!running[@]}"; do
		kill -KILL -- "-$pid" 2>/dev/null
	done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# suite_paths, apart_paths, host_suite_paths: absolute paths, for the
# guest (apart_paths: the suites of SUITES that are in APART)
suite_paths=() apart_paths=() host_suite_paths=()
for s in $SUITES; do
	if [[ " $APART " == *" $s "* ]]; then
		apart_paths+=("$TOP/$s")
	else
		suite_paths+=("$TOP/$s")
	fi
done
for s in $HOST_SUITES; do
	host_suite_paths+=("$TOP/$s")
done

passed=0 failed=0
declare -A summary=() # kernel name -> its line
rm -rf "$MATRIX"
mkdir -p "$MATRIX"

# report NAME OUT SECONDS: the kernel's line, and its counts added up.
report() {
	local name=$1 out=$2 secs=$3 kver s sname dir rc line p f kp=0 kf=0 parts=() ok=1 feat suites=$SUITES
	kver=$(cat "$out/kernel" 2>/dev/null || echo "did not boot")
	[[ $name == host ]] && suites=$HOST_SUITES
	[[ -z $suites ]] && parts+=("no suites (make test runs them on this kernel)")
	for s in $suites; do
		sname=$(basename "$s" .sh)
		# (a suite of APART ran in the kernel's other guest: OUT/apart)
		dir=$out
		[[ $name != host && " $APART " == *" $s "* ]] && dir=$out/apart
		rc=$(cat "$dir/$sname.rc" 2>/dev/null || echo none)
		line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$dir/$sname.log" 2>/dev/null | tail -n 1)
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
		parts+=("$sname: $p passed, $f failed ($(cat "$dir/$sname.seconds" 2>/dev/null)s)")
	done
	feat=$(jq -r '"features: \([.features[] | select(.present)] | length)/\(.features | length) present" +
		(if .usable then "" else ", UNUSABLE" end)' "$out/features.json" 2>/dev/null ||
		echo "features: no report")
	passed=$((passed + kp))
	failed=$((failed + kf))
	summary[$name]=$(printf '%-5s %-22s %s  [%s]  %s, %s total  => %s' "$name" "$kver" \
		"$(IFS=';'; echo "${parts[*]}" | sed 's/;/; /g')" "$feat" \
		"$([[ $name == host ]] && echo "on the host" || echo "TCG guests")" "$secs" \
		"$([[ $ok -eq 1 ]] && echo PASS || echo FAIL)")
	echo "${summary[$name]}"
}

# A guest job is a kernel's name (its suites but those of APART, the
# feature probe and the verifier's figures: OUT=$MATRIX/NAME) or NAME/apart
# (the suites of APART alone: OUT=$MATRIX/NAME/apart). Both end before the
# kernel's line is printed.
# guest_start JOB: boots the guest of JOB in the background (in running,
# its start time in OUT/started); 1 when its image cannot be fetched.
guest_start() {
	local job=$1 name=${1%/apart} out=$MATRIX/$1 line kver kdir args
	if ! line=$(scripts/fetch-kernels.sh "$name"); then
		echo "test-kernels: cannot fetch kernel $name" >&2
		return 1
	fi
	read -r _ kver kdir <<<"$line"
	mkdir -p "$out"
	date +%s >"$out/started"
	args="/tmp/dmsc-matrix-out ${suite_paths[*]}"
	[[ $job == */apart ]] && args="--suites-only /tmp/dmsc-matrix-out ${apart_paths[*]}"
	# virtme-ng: the host's root read-only, $out read-write at
	# /tmp/dmsc-matrix-out (the guest's /tmp is a tmpfs: a mount point
	# elsewhere on the read-only root is refused), no KVM.
	setsid timeout --kill-after=10 "$TIMEOUT" \
		vng --disable-kvm --run "$kdir/boot/vmlinuz-$kver" --cpus "$CPUS" --memory "$MEMORY" \
		--rwdir="/tmp/dmsc-matrix-out=$out" \
		--exec "$TOP/tests/matrix/guest.sh $args" \
		</dev/null >"$out/console.log" 2>&1 &
	running[$!]=$job
	echo "== kernel $job: guest started (pid $!)"
}

# guest_done JOB RC: what the guest printed; the kernel's line once its
# last job ended.
declare -A jobs_left=() # kernel name -> its jobs not ended
guest_done() {
	local job=$1 name=${1%/apart} rc=$2 out=$MATRIX/$1 secs
	secs=$(($(date +%s) - $(cat "$out/started")))
	echo "$secs" >"$out/seconds"
	echo "== kernel $job (${secs}s)"
	grep -v '^qemu-system-x86_64: warning: 9p' "$out/console.log"
	[[ $rc -eq 124 ]] && echo "test-kernels: guest $job timed out after ${TIMEOUT}s"
	jobs_left[$name]=$((jobs_left[$name] - 1))
	((jobs_left[$name] > 0)) && return
	secs="$(cat "$MATRIX/$name/seconds" 2>/dev/null)s"
	[[ -f $MATRIX/$name/apart/seconds ]] && secs="$secs + $(cat "$MATRIX/$name/apart/seconds")s"
	report "$name" "$MATRIX/$name" "$secs"
}

# The host first, alone; then the guests, JOBS at a time, each kernel
# reported when its last guest ends (the closing summary keeps the order of
# the names). The jobs of APART first (each as long as a kernel's others
# together), then the others, so that the two lanes end close together.
jobs=() rest=()
for name in "${names[@]}"; do
	mkdir -p "$MATRIX/$name"
	if [[ $name == host ]]; then
		echo "== kernel host"
		t0=$(date +%s)
		tests/matrix/guest.sh "$MATRIX/host" "${host_suite_paths[@]}" 2>&1 | tee "$MATRIX/host/console.log"
		report host "$MATRIX/host" "$(($(date +%s) - t0))s"
	else
		jobs_left[$name]=1
		((${#apart_paths[@]})) && jobs+=("$name/apart") && jobs_left[$name]=2
		rest+=("$name")
	fi
done
jobs+=("${rest[@]}")
next=0
while ((next < ${#jobs[@]} || ${#running[@]} > 0)); do
	while ((next < ${#jobs[@]} && ${#running[@]} < JOBS)); do
		job=${jobs[next]}
		name=${job%/apart}
		next=$((next + 1))
		[[ -n ${summary[$name]:-} ]] && continue # its image was not fetched
		if ! guest_start "$job"; then
			failed=$((failed + 1))
			summary[$name]=$(printf '%-5s %-22s => FAIL (kernel image not fetched)' "$name" -)
		fi
	done
	((${#running[@]})) || break
	# the first guest to end (wait -n -p: bash 5.1)
	wait -n -p done_pid "${!running[@]}"
	rc=$?
	guest_done "${running[$done_pid]}" "$rc"
	unset "running[$done_pid]"
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
for name in "${names[@]}"; do
	[[ -n ${summary[$name]:-} ]] && echo "${summary[$name]}"
done
echo "${passed} passed, ${failed} failed"
[[ $failed -eq 0 ]]
