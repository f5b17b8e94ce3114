#!/usr/bin/env bash
# Feature probing on the running kernel: what `dmscctl features` and
# `verifier` report, and what install does when a feature is missing. An
# older kernel is played with DMSC_FEATURES_HIDE (the probe then reports the
# named feature absent): an optional hook is left out with its fallback, a
# required feature makes install refuse, naming it and the Linux version
# that has it, and leave nothing behind.
set -u
. "$(cd "$(dirname "$0")/../lib" && pwd)/kernel.sh"
dmsc_suite_begin feat dft$$
VIP=198.19.0.10

# jqe FILTER FILE: jq -e, quietly.
jqe() {
	jq -e "$1" "$2" >/dev/null
}

# 1. What this kernel offers.
"$CTL" -o json features >"$T/features.json" 2>"$T/features.err"
t_check "features: dmsc can run on $(uname -r)" jqe '.usable' "$T/features.json"
t_eq "features: every feature is present" \
	"$(jq -c '[.features[] | select(.present | not) | .name]' "$T/features.json")" "[]"
t_check "features: every hook of the datapath is probed" \
	jqe '[.features[].name] | index("cgroup/connect4") and index("cgroup/getpeername4")' \
	"$T/features.json"

"$CTL" -o json verifier >"$T/verifier.json" 2>"$T/verifier.err"
t_eq "verifier: exit 0" "$?" 0
t_check "verifier: every program loaded, with instructions processed" \
	jqe '(.programs | length) >= 2 and all(.programs[]; .loaded and .processed_insns > 0 and .xlated_bytes > 0)' \
	"$T/verifier.json"

# 2. An older kernel without cgroup/getpeername4 (before 5.8): fallback.
dmsc_net_hosts c=198.18.0.2/16 b1=198.18.1.2/16 || exit 1
MESH=$(dmsc_cgroup_make "$P/mesh") || exit 1
dmsc_testsrv b1 v1 id 198.18.1.2:9080 3600 "$T/b1.out"
dmsc_backends_ready "$T/b1.out"
cat >"$T/p.json" <<EOF2
{ "services": [ { "name": "reviews", "vip": "$VIP", "port": 9080,
  "backends": [ { "address": "198.18.1.2", "port": 9080 } ] } ] }
EOF2

DMSC_FEATURES_HIDE=cgroup/getpeername4 "$CTL" install --cgroup "$MESH" >"$T/install1" 2>&1
t_eq "without getpeername4: install succeeds" "$?" 0
t_check "... and says what it does instead" grep -q 'lacks cgroup/getpeername4 (Linux 5.8' "$T/install1"
DMSC_FEATURES_HIDE=cgroup/getpeername4 "$CTL" -o json status >"$T/status1.json"
t_eq "... status: connect4 attached, getpeername4 skipped with its fallback" \
	"$(jq -c '[.hooks[] | select(.hook == "cgroup/connect4" or .hook == "cgroup/getpeername4") | [.hook, .attached, (.skipped != null)]]' "$T/status1.json")" \
	'[["cgroup/connect4",true,false],["cgroup/getpeername4",false,true]]'
t_eq "... status: the features section shows it missing" \
	"$(jq -c '[.features[] | select(.name == "cgroup/getpeername4") | .present, .required]' "$T/status1.json")" \
	'[false,false]'
"$CTL" apply "$T/p.json" >/dev/null
dmsc_run_in_cgroup "$MESH" dmsc_net_exec c "$PROBE" --json --max-seconds 300 --timeout-ms 30000 \
	--connect "$VIP:9080" --count 20 >"$T/probe1.json"
t_eq "... connections through the VIP still work, getpeername() shows the backend" \
	"$(jq -c '[.ok, .peer_is_target]' "$T/probe1.json")" "[20,0]"
"$CTL" uninstall >/dev/null

# 3. A kernel without a required feature: install refuses, names it.
DMSC_FEATURES_HIDE="bpf_sk_storage_get in cgroup/connect4" "$CTL" install --cgroup "$MESH" \
	>"$T/install2" 2>&1
t_eq "without bpf_sk_storage_get in connect4: install fails" "$?" 1
t_check "... naming the feature and the Linux version that has it" \
	grep -q 'lacks bpf_sk_storage_get in cgroup/connect4 (helper, Linux 5.10' "$T/install2"
t_check "... and leaves nothing behind" test ! -e "$DMSC_PIN_DIR"
DMSC_FEATURES_HIDE="bpf_sk_storage_get in cgroup/connect4" "$CTL" features >/dev/null 2>&1
t_eq "... and features exits 1 there" "$?" 1

# 4. Back on this kernel as it is: the VIP is answered in full again.
"$CTL" install --cgroup "$MESH" >/dev/null && "$CTL" apply "$T/p.json" >/dev/null
dmsc_run_in_cgroup "$MESH" dmsc_net_exec c "$PROBE" --json --max-seconds 300 --timeout-ms 30000 \
	--connect "$VIP:9080" --count 20 >"$T/probe2.json"
t_eq "with every feature: getpeername() shows the VIP again" \
	"$(jq -c '[.ok, .peer_is_target]' "$T/probe2.json")" "[20,20]"
t_check "uninstall" "$CTL" uninstall
t_summary
