#!/usr/bin/env bash
# guest.sh OUT_DIR [SUITE...]: the part of the kernel matrix that runs inside
# a virtme-ng guest (or directly on the host for the running kernel).
# Prepares what virtme-ng's init may lack (cgroup2, /run/netns), then:
#   1. the feature probe: dmscctl features -o json > OUT/features.json
#   2. each kernel suite: OUT/NAME.log, its "N passed, M failed" line and
#      exit code in OUT/NAME.rc (77: skipped)
#   3. the verifier figures of every program: dmsc installed on a cgroup of
#      its own in a private bpffs, `bpftool prog show` per attached program,
#      OUT/verifier.json
# The runner (scripts/test-kernels.sh) reads OUT/; this prints progress only.
set -u
OUT=${1:?usage: guest.sh OUT_DIR [SUITE...]}
shift
TOP=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$TOP/build}
SUITES=("$@")
[[ ${#SUITES[@]} -eq 0 ]] && SUITES=("$TOP/tests/kernel/test_l4.sh")
export TMPDIR=${TMPDIR:-/tmp}
W=$(mktemp -d "$TMPDIR/dmsc-matrix.XXXXXX")
CG=

cleanup() {
	[[ -n ${DMSC_PIN_DIR:-} ]] && "$BIN/dmscctl" uninstall >/dev/null 2>&1
	mountpoint -q "$W/bpffs" 2>/dev/null && umount "$W/bpffs"
	[[ -n $CG && -d $CG ]] && rmdir "$CG" 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT

uname -r >"$OUT/kernel"
# virtme-ng's init does not always mount cgroup2; a guest has nothing else on it.
if ! grep -q ' cgroup2 ' /proc/mounts; then
	mount -t cgroup2 cgroup2 /sys/fs/cgroup || echo "guest: cannot mount cgroup2" >&2
fi
mkdir -p /run/netns

"$BIN/dmscctl" features -o json >"$OUT/features.json" 2>"$OUT/features.err"
echo $? >"$OUT/features.rc"
"$BIN/dmscctl" features 2>&1 | sed 's/^/  /'

for suite in "${SUITES[@]}"; do
	name=$(basename "$suite" .sh)
	echo "== $name on $(uname -r)"
	t0=$(date +%s)
	BIN=$BIN DMSC_TOOLS=$BIN/tools "$suite" >"$OUT/$name.log" 2>&1
	echo $? >"$OUT/$name.rc"
	echo $(($(date +%s) - t0)) >"$OUT/$name.seconds"
	grep -E '^(not ok|[0-9]+ passed)' "$OUT/$name.log" | sed 's/^/  /'
done

# Verifier figures: what the kernel reports for each attached program.
mkdir -p "$W/bpffs" && mount -t bpf bpf "$W/bpffs" || exit 0
export DMSC_PIN_DIR=$W/bpffs/dmsc
root=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
CG=$root/dmsc-matrix-$$
mkdir -p "$CG"
if "$BIN/dmscctl" install --cgroup "$CG" >"$OUT/install.log" 2>&1; then
	"$BIN/dmscctl" status -o json >"$OUT/status.json" 2>&1
	echo '[' >"$OUT/verifier.json"
	sep=
	for id in $(jq -r '.hooks[].prog_id' "$OUT/status.json"); do
		printf '%s' "$sep" >>"$OUT/verifier.json"
		bpftool -j prog show id "$id" >>"$OUT/verifier.json"
		sep=,
	done
	echo ']' >>"$OUT/verifier.json"
fi
exit 0
