#!/usr/bin/env bash
# guest.sh [--suites-only] OUT_DIR [SUITE...]: the part of the kernel matrix
# that runs inside a virtme-ng guest (or directly on the host for the running
# kernel). --suites-only: step 2 alone (a kernel's second guest, beside the
# one that probes).
# Prepares what virtme-ng's init may lack (cgroup2, /run/netns), then:
#   1. the feature probe: dmscctl features -o json > OUT/features.json
#   2. each kernel suite: OUT/NAME.log, its "N passed, M failed" line and
#      exit code in OUT/NAME.rc (77: skipped), its seconds in
#      OUT/NAME.seconds and each check's in OUT/NAME.times
#   3. the verifier's figures of every program: dmscctl verifier -o json >
#      OUT/verifier.json (instructions processed, states, xlated/jited size)
# The runner (scripts/test-kernels.sh) reads OUT/; this prints progress only.
set -u
PROBES=1
[[ ${1:-} == --suites-only ]] && PROBES=0 && shift
OUT=${1:?usage: guest.sh [--suites-only] OUT_DIR [SUITE...]}
shift
TOP=$(cd "$(dirname "$0")/../.." && pwd)
export BIN=${BIN:-$TOP/build}
SUITES=("$@") # none: the feature probe and the verifier's figures only
export TMPDIR=${TMPDIR:-/tmp}
uname -r >"$OUT/kernel"
# virtme-ng's init does not always mount cgroup2; a guest (a throwaway VM)
# has nothing else on it. The suites still attach only to cgroups they make.
GUEST_CGROUP2=/sys/fs/cgroup
if ! grep -q ' cgroup2 ' /proc/mounts; then
	mount -t cgroup2 cgroup2 "$GUEST_CGROUP2" || echo "guest: cannot mount cgroup2" >&2
fi
mkdir -p /run/netns

if ((PROBES)); then
	"$BIN/dmscctl" features -o json >"$OUT/features.json" 2>"$OUT/features.err"
	echo $? >"$OUT/features.rc"
	"$BIN/dmscctl" features 2>&1 | sed 's/^/  /'
fi

# Suites may keep to their kernel checks here (test_ipv6.sh does).
export DMSC_MATRIX=1
for suite in "${SUITES[@]}"; do
	name=$(basename "$suite" .sh)
	echo "== $name on $(uname -r)"
	t0=$(date +%s)
	: >"$OUT/$name.times"
	DMSC_TIMES=$OUT/$name.times DMSC_TOOLS=$BIN/tools "$suite" >"$OUT/$name.log" 2>&1
	echo $? >"$OUT/$name.rc"
	echo $(($(date +%s) - t0)) >"$OUT/$name.seconds"
	grep -E '^(not ok|[0-9]+ passed)' "$OUT/$name.log" | sed 's/^/  /'
	# the steps that took longest (seconds to the check, from the one before)
	sort -k2,2 -n -r "$OUT/$name.times" | head -n 5 | sed 's/^/  slowest: /'
done

# The verifier's figures for every program (what veristat would print):
# loaded privately, nothing attached or pinned.
if ((PROBES)); then
	"$BIN/dmscctl" -o json verifier >"$OUT/verifier.json" 2>"$OUT/verifier.err"
	echo $? >"$OUT/verifier.rc"
	"$BIN/dmscctl" verifier 2>&1 | sed 's/^/  /'
fi
exit 0
