#!/usr/bin/env bash
# Each binary links only the layers it uses (docs/architecture.md): dmsc-l7
# looks services up in the pinned maps but never loads programs, so the
# loader and the BPF objects it embeds must not be linked into it (they
# were once, through one key function: 1.55 MB instead of 0.91 MB). Reads
# build/ (made by `make`); no root needed. Prints "N passed, M failed" last.
set -u
TOP=$(cd "$(dirname "$0")/../.." && pwd)
. "$TOP/tests/lib/assert.sh"
BIN=${BIN:-$TOP/build}

for b in dmsc-l7 dmscd; do
	[[ -x $BIN/$b ]] || { echo "test_layers: $BIN/$b is not built (make)" >&2; exit 77; }
done
# the loader's own functions (user/datapath/datapath_load.c)
loader() { nm "$BIN/$1" 2>/dev/null | grep -cE ' T (load_object|skels_destroy)$'; }
t_eq "dmscd links the loader (the check sees it where it is)" "$(loader dmscd)" 2
t_eq "dmsc-l7 links no loader and no BPF object" "$(loader dmsc-l7)" 0
t_summary
