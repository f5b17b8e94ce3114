#!/usr/bin/env bash
# Upgrade in place from a previous build, under load.
#
# A host that runs an earlier dmsc must be upgraded by `dmscctl install` of
# the new build without one failed connection, even when the new build
# renames programs, pins or maps (docs/design.md decision 1: the pinned maps
# are the single source of truth and a new build adopts what it finds).
# This suite builds the dmscctl of DMSC_UPGRADE_FROM (a git revision,
# default 1f58f6d, the last commit before dmsc_be_health was split in two
# (docs/design.md decision 53); before it 8fb0649, the last of the layout
# before the restructure of issue 11: whenever programs, pins or maps
# change, move it to the last commit of the previous layout) from `git archive` into its temporary
# directory, installs it on a test cgroup, applies a policy, runs
# connections through the VIP from a client namespace, installs the current
# build over it while they run, and checks: no connection failed,
# translation still works, `dmscctl status` is clean, and the pins left are
# exactly those that a fresh install of the current build makes (nothing of
# the old layout left behind). Backend health is carried over: a backend
# the kernel ejected stays ejected with its counts, and dmscd's verdict
# (written into the old layout's element as the old dmscd did) stays, so
# the apply after the upgrade keeps the backend out and writes nothing.
#
# Both builds use their default pin directory (/sys/fs/bpf/dmsc/vN, so a
# change of DMSC_LAYOUT_VERSION is upgraded as on a real host), in a BPF
# filesystem of the suite's own: the suite runs in a mount namespace of its
# own (unshare) and mounts a new bpffs over /sys/fs/bpf there, which the
# host never sees. Everything the suite pins vanishes with that namespace.
#
# Needs the repository's git history (a fresh clone has it); without it, or
# without the revision, it is skipped (exit 77), never passed.
set -u
if [[ -z ${DMSC_UPGRADE_MOUNT_NS:-} && $(id -u) -eq 0 ]]; then
	if ! command -v unshare >/dev/null; then
		echo "skip - unshare (util-linux) is missing: no private mount namespace"
		exit 77
	fi
	DMSC_UPGRADE_MOUNT_NS=1 exec unshare --mount --propagation private "$0" "$@"
	echo "unshare --mount failed"
	exit 1
fi
. "$(cd "$(dirname "$0")/../lib" && pwd)/kernel.sh"
LOADPIDS=()
suite_cleanup() {
	dmsc_stop KILL "${LOADPIDS[@]}"
	# Both builds' pins (a new layout may use another directory); the
	# private bpffs goes with the mount namespace anyway.
	if [[ -n ${BPFFS_MOUNTED:-} ]]; then
		"$CTL" uninstall >/dev/null 2>&1
		[[ -x ${OLD_CTL:-} ]] && "$OLD_CTL" uninstall >/dev/null 2>&1
		umount /sys/fs/bpf
	fi
}
dmsc_suite_begin upgrade dup$$
# The suite's own bpffs at the default place, only in this mount namespace.
if [[ $(readlink /proc/self/ns/mnt) == "$(readlink /proc/1/ns/mnt)" ]] ||
	[[ $(findmnt -no PROPAGATION /sys/fs/bpf 2>/dev/null || echo private) != private ]]; then
	t_fail "a private mount namespace (not the host's) for /sys/fs/bpf"
	t_summary
	exit 1
fi
if ! mount -t bpf bpf /sys/fs/bpf; then
	t_fail "mount a BPF filesystem at /sys/fs/bpf in the suite's mount namespace"
	t_summary
	exit 1
fi
BPFFS_MOUNTED=1
unset DMSC_PIN_DIR
PINS=/sys/fs/bpf/dmsc # DMSC_PIN_ROOT: every layout's directory is under it
FROM=${DMSC_UPGRADE_FROM:-1f58f6d}
OLD=$T/old
OLD_CTL=$OLD/build/dmscctl
VIP=198.19.0.10

# ---- the previous build --------------------------------------------------
if ! command -v git >/dev/null || ! git -C "$TOP" rev-parse --git-dir >/dev/null 2>&1; then
	echo "skip - $TOP is not a git checkout: the previous build cannot be made"
	exit 77
fi
if ! rev=$(git -C "$TOP" rev-parse --verify -q "$FROM^{commit}"); then
	echo "skip - revision $FROM (DMSC_UPGRADE_FROM) is not in this clone's history" \
		"(a shallow clone?): the previous build cannot be made"
	exit 77
fi
mkdir -p "$OLD" || exit 1
if ! git -C "$TOP" archive "$rev" | tar -x -C "$OLD"; then
	t_fail "git archive $FROM into $OLD"
	t_summary
	exit 1
fi
# Same kernel, same BTF: reuse this build's vmlinux.h (the old Makefile
# would dump the very same file).
[[ -f $BIN/vmlinux.h ]] && mkdir -p "$OLD/build" && cp "$BIN/vmlinux.h" "$OLD/build/"
# A clean environment: make test's MAKEFLAGS, BUILD or CFLAGS must not leak
# into the old tree's build. Only dmscctl (and the objects it embeds).
start=$SECONDS
if ! env -i PATH="$PATH" make -C "$OLD" -j2 build/dmscctl >"$T/old-build.log" 2>&1; then
	tail -n 20 "$T/old-build.log"
	t_fail "build dmscctl of $FROM"
	t_summary
	exit 1
fi
echo "# built dmscctl of $FROM (${rev:0:12}) in $((SECONDS - start)) s"

# ---- hosts, backends, the old install ------------------------------------
dmsc_net_hosts c=198.18.0.2/16 b1=198.18.1.2/16 b2=198.18.1.3/16 || exit 1
dmsc_cgroups MESH=mesh FRESH_CG=fresh || exit 1
for b in b1:198.18.1.2:v1 b2:198.18.1.3:v2; do
	IFS=: read -r host addr name <<<"$b"
	dmsc_testsrv "$host" "$name" id "$addr:9080" 300 "$T/$host.out"
done
dmsc_backends_ready "$T/b1.out" "$T/b2.out"
cat >"$T/policy.json" <<EOF
{ "services": [ { "name": "reviews", "vip": "$VIP", "port": 9080, "backends": [
  { "address": "198.18.1.2", "port": 9080, "weight": 50 },
  { "address": "198.18.1.3", "port": 9080, "weight": 50 } ] },
  { "name": "health", "vip": "$VIP", "port": 9081, "backends": [
  { "address": "198.18.1.2", "port": 9080 },
  { "address": "198.18.1.3", "port": 9089 } ],
    "health": { "passive": { "consecutive_failures": 3, "base_ejection_ms": 600000,
                             "max_ejection_ms": 600000 } } } ] }
EOF

# pins DIR: every pin and directory under DIR, relative, sorted.
pins() {
	(cd "$1" && find . -mindepth 1 | sed 's|^\./||' | LC_ALL=C sort)
}

probe() {
	dmsc_run_in_cgroup "$MESH" dmsc_net_exec c "$PROBE" --json --max-seconds 60 "$@"
}

# quiet LOG CMD...: runs CMD with its output in $T/LOG, shown if it fails.
quiet() {
	local log=$T/$1
	shift
	"$@" >"$log" 2>&1 || { sed 's/^/# /' "$log"; return 1; }
}

t_check "the previous build ($FROM) installs" quiet old-install.log "$OLD_CTL" install --cgroup "$MESH"
# A build before backend health (8fb0649) gets the policy without it, and
# the health checks are left out (said so, not passed).
HEALTH=1
POLICY=$T/policy.json
if ! compgen -G "$PINS/*/maps/dmsc_be_health" >/dev/null; then
	HEALTH=0
	POLICY=$T/policy-l4.json
	jq 'del(.services[1])' "$T/policy.json" >"$POLICY"
	echo "# $FROM has no backend health: its carrying over is not checked"
fi
t_check "the previous build applies the policy" quiet old-apply.log "$OLD_CTL" apply "$POLICY"
probe --connect "$VIP:9080" --count 200 --parallel 4 >"$T/before.json"
t_eq "200 connections through the VIP with the previous build" \
	"$(jq -c '[.ok, .failed, .peer_is_target]' "$T/before.json")" "[200,0,200]"
if ((HEALTH)); then
	# Health in the old layout: the kernel ejects health's dead backend (nothing
	# listens on 198.18.1.3:9089) after 3 refused connects; then dmscd's fields
	# of its element say its probes failed too (the old dmscd's write: out 2 =
	# probe_failed, 4 failed in a row, last -111 = ECONNREFUSED, 9 probes), and
	# an apply lays the table out without it.
	dead() {
		"$1" show services -o json | jq -c '.services[] | select(.name == "health") | .backends[1] |
		[.id, .slots, .health.state, .health.connect_failures, .health.ejections, .health.probes]'
	}
	probe --connect "$VIP:9081" --count 20 >"$T/health-before.json"
	dead_id=$(dead "$OLD_CTL" | jq -r ".[0]")
	t_eq "the previous build's kernel ejects the dead backend" "$(dead "$OLD_CTL" | jq -r '.[2]')" ejected
	dead_failures=$(dead "$OLD_CTL" | jq '.[3]')
	python3 - "$PINS" "$dead_id" <<'PY' >"$T/verdict.log" 2>&1 || t_fail "write the old dmscd's fields"
import glob, json, struct, subprocess, sys
path = glob.glob(sys.argv[1] + "/*/maps/dmsc_be_health")[0]
key = [str(b) for b in struct.pack("<I", int(sys.argv[2]))]
old = json.loads(subprocess.check_output(["bpftool", "-j", "map", "lookup", "pinned", path, "key"] + key))
val = bytes(int(b, 16) for b in old["value"])
assert len(val) == 64, len(val)
val = val[:36] + struct.pack("<IQIIiI", 2, 1, 0, 4, -111, 9)
subprocess.check_call(["bpftool", "map", "update", "pinned", path, "key"] + key + ["value"] + [str(b) for b in val])
PY
	t_check "the previous build's apply takes it out of the table" quiet old-apply2.log "$OLD_CTL" apply "$T/policy.json"
	t_eq "before: the dead backend ejected, no slots, its counts" "$(dead "$OLD_CTL" | jq -c '.[1:]')" \
		"[0,\"ejected\",$dead_failures,1,9]"
fi
pins "$PINS" >"$T/pins-old"
progs_old=$("$OLD_CTL" status -o json | jq -c '[.hooks[].prog_id] | sort')

# ---- the upgrade, under load -----------------------------------------------
# Batches of connections until $T/stop exists (at most 100 batches, each
# bounded by the probe's --max-seconds), and one connection held across.
rm -f "$T/stop"
(
	for ((i = 0; i < 100; i++)); do
		[[ -e $T/stop ]] && break
		probe --connect "$VIP:9080" --count 100 --parallel 4 >>"$T/batches"
	done
) &
LOADPIDS+=($!)
probe --connect "$VIP:9080" --hold-seconds 4 --interval-ms 50 >"$T/hold.json" &
LOADPIDS+=($!)
# The upgrade starts once load is flowing: the first batch is in.
for ((i = 0; i < 100; i++)); do
	[[ -s $T/batches ]] && break
	sleep 0.05
done
t_check "the current build installs over the previous one" quiet install.log "$CTL" install --cgroup "$MESH"
# What the install migrated, map by map (migrate.c logs each), for the log.
grep -i 'migrated' "$T/install.log" | sed 's/^/# /'
# A few more batches after the upgrade, then stop.
n_at_upgrade=$(wc -l <"$T/batches")
for ((i = 0; i < 200; i++)); do
	[[ $(wc -l <"$T/batches") -ge $((n_at_upgrade + 3)) ]] && break
	sleep 0.05
done
touch "$T/stop"
for p in "${LOADPIDS[@]}"; do
	wait "$p"
done
LOADPIDS=()
read -r batches conns ok failed <<<"$(jq -rs '[length, (map(.connections) | add),
	(map(.ok) | add), (map(.failed) | add)] | map(tostring) | join(" ")' "$T/batches")"
t_check "load ran across the upgrade ($batches batches, $n_at_upgrade before the install)" \
	test "$batches" -gt "$n_at_upgrade" -a "$n_at_upgrade" -ge 1
t_eq "no connection failed during the upgrade" "$failed:$ok" "0:$conns"
t_eq "the connection held across the upgrade survived" \
	"$(jq -c '[.held, .errors]' "$T/hold.json")" "[1,0]"

# ---- after -------------------------------------------------------------------
probe --connect "$VIP:9080" --count 200 --parallel 4 >"$T/after.json"
t_eq "200 connections through the VIP after the upgrade, getpeername() the VIP" \
	"$(jq -c '[.ok, .failed, .peer_is_target]' "$T/after.json")" "[200,0,200]"
t_check "both backends still get connections" \
	jq -e '(.backends.v1 // 0) > 0 and (.backends.v2 // 0) > 0' "$T/after.json" >/dev/null
"$CTL" status >"$T/status.txt" 2>&1
t_eq "dmscctl status exits 0" $? 0
"$CTL" status -o json >"$T/status.json"
t_eq "status: installed on the test cgroup, the policy's services kept" \
	"$(jq -c --arg cg "$P/mesh" '[.installed, (.cgroup | endswith($cg)), .services, .backends]' "$T/status.json")" \
	"[true,true,$((1 + HEALTH)),$((2 + 2 * HEALTH))]"
t_eq "status: every hook attached (or skipped for a missing kernel feature)" \
	"$(jq -c '[.hooks[] | select(.attached | not) | select(.skipped == null) | .hook]' "$T/status.json")" "[]"
t_check "status text says nothing is detached" bash -c "! grep -q 'NOT ATTACHED' '$T/status.txt'"
progs_new=$(jq -c '[.hooks[].prog_id] | sort' "$T/status.json")
t_check "the programs were replaced ($progs_old -> $progs_new)" \
	test -n "$progs_new" -a "$progs_new" != "$progs_old"
if ((HEALTH)); then
	t_check "the install converted dmsc_be_health, dmscd's part into dmsc_be_verdict" \
		grep -q 'map dmsc_be_health migrated .* converted, dmscd.s part into dmsc_be_verdict' "$T/install.log"
	t_eq "after: the dead backend still ejected, no slots, its counts and dmscd's carried" \
		"$(dead "$CTL" | jq -c '.[1:]')" "[0,\"ejected\",$dead_failures,1,9]"
	t_eq "an unchanged policy writes nothing after the upgrade (dmscd's verdict kept it out)" \
		"$("$CTL" apply "$POLICY" -o json | jq -c '.entries_written')" 0
	probe --connect "$VIP:9081" --count 50 >"$T/health-after.json"
	t_eq "connections to the service with health all reach its live backend" \
		"$(jq -c '[.ok, .failed]' "$T/health-after.json")" "[50,0]"
else
	t_eq "an unchanged policy writes nothing after the upgrade" \
		"$("$CTL" apply "$POLICY" -o json | jq -c '.entries_written')" 0
fi

# The pins the upgraded host has must be those a fresh install of the
# current build makes: nothing of the old layout left over. The fresh
# install goes to another cgroup and another private bpffs (a nested mount
# namespace, gone when it ends).
pins "$PINS" >"$T/pins-upgraded"
# shellcheck disable=SC2016 # expanded by the inner shell
if unshare --mount --propagation private bash -c 'mount -t bpf bpf /sys/fs/bpf &&
	"$1" install --cgroup "$2" && (cd /sys/fs/bpf/dmsc && find . -mindepth 1 | sed "s|^\./||" |
	LC_ALL=C sort) >"$3"; rc=$?; "$1" uninstall; exit $rc' _ "$CTL" "$FRESH_CG" "$T/pins-fresh" \
	>"$T/fresh.log" 2>&1; then
	t_check "the upgraded host has exactly the pins of a fresh install ($(wc -l <"$T/pins-fresh"))" \
		diff -u "$T/pins-fresh" "$T/pins-upgraded"
	comm -23 "$T/pins-old" "$T/pins-fresh" >"$T/pins-gone"
	t_check "no pin of the old layout is left ($(wc -l <"$T/pins-gone") were not in the new one)" \
		bash -c "! grep -qxF -f '$T/pins-gone' '$T/pins-upgraded'"
else
	sed 's/^/# /' "$T/fresh.log"
	t_fail "a fresh install of the current build, for comparison"
fi

t_check "uninstall removes every pin" quiet uninstall.log "$CTL" uninstall
t_eq "nothing is left under $PINS" "$([[ -d $PINS ]] && pins "$PINS")" ""
t_summary
