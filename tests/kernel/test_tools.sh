#!/bin/bash
# shellcheck source-path=SCRIPTDIR
# shellcheck disable=SC2317 # functions called through check and the traps
# test_tools.sh: self-test of the test tools, without any BPF: dmsc-testsrv,
# dmsc-probe and tests/lib/netns.sh, on a hub with two hosts:
#
#   c   198.18.0.2/16   the client
#   b1  198.18.1.2/16   servers: id :9000, http :8080, echo :9002, sink :9003
#
# Prints "ok - ..." / "not ok - ..." per check, then "N passed, M failed".
# Exit: 0 all passed, 1 a check failed, 77 skipped (not root, tools missing).
# Needs root. Diagnostics go to stderr. Builds build/tools/ with make unless
# DMSC_TOOLS names a directory holding dmsc-testsrv and dmsc-probe.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
SKIP=77

if [[ $(id -u) != 0 ]]; then
	echo "skip: test_tools.sh needs root" >&2
	exit "$SKIP"
fi
for cmd in ip curl timeout; do
	if ! command -v "$cmd" >/dev/null; then
		echo "skip: $cmd is missing" >&2
		exit "$SKIP"
	fi
done
if [[ -n "${DMSC_TOOLS-}" ]]; then
	tools=$DMSC_TOOLS
else
	tools=$root/build/tools
	make -s -C "$root" build/tools/dmsc-testsrv build/tools/dmsc-probe >&2 || {
		echo "not ok - build the tools"
		echo "0 passed, 1 failed"
		exit 1
	}
fi
testsrv=$tools/dmsc-testsrv
probe=$tools/dmsc-probe

# shellcheck source=../lib/netns.sh
source "$root/tests/lib/netns.sh"
# shellcheck source=../lib/assert.sh
source "$root/tests/lib/assert.sh"

work=$(mktemp -d /tmp/dmsc-test-tools.XXXXXX)

cleanup() {
	trap - EXIT INT TERM
	dmsc_kill_jobs
	dmsc_net_cleanup
	rm -rf -- "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# has FILE REGEX: FILE has a line matching REGEX (extended); shows FILE if not.
has() {
	if grep -Eq -- "$2" "$1"; then
		return 0
	fi
	echo "# expected /$2/ in $1:" >&2
	sed 's/^/#   /' "$1" >&2
	return 1
}

now_ms() {
	echo $(($(date +%s%N) / 1000000))
}

# start_server NAME MODE ADDR:PORT [extra args]: testsrv in host b1, waits for ready.
start_server() {
	local name=$1 mode=$2 listen=$3
	shift 3
	dmsc_net_exec b1 "$testsrv" --listen "$listen" --name "$name" --mode "$mode" \
		--max-seconds 120 "$@" >"$work/srv-$name.out" 2>"$work/srv-$name.err" &
	echo $! >"$work/srv-$name.pid"
	dmsc_wait_ready "$work/srv-$name.out" 5
}

# ---- topology ------------------------------------------------------------

prefix="dmsct$$"
prefix=${prefix:0:12}
t_check "dmsc_net_init $prefix" dmsc_net_init "$prefix"
t_check "hub namespace with br0" dmsc_net_hub
t_check "host c 198.18.0.2/16" dmsc_net_host c 198.18.0.2/16
t_check "host b1 198.18.1.2/16" dmsc_net_host b1 198.18.1.2/16
t_check "dmsc_net_host is idempotent" dmsc_net_host c 198.18.0.2/16

if dmsc_net_host bad 10.0.0.1/24 2>/dev/null || dmsc__ns_exists "${prefix}bad"; then
	t_fail "an address outside 198.18.0.0/16 is refused"
else
	t_ok "an address outside 198.18.0.0/16 is refused"
fi
if dmsc_net_host bad 198.19.0.1/16 2>/dev/null || dmsc_net_host bad 198.18.0.9/15 2>/dev/null; then
	t_fail "a VIP address or a prefix covering 198.19/16 is refused"
else
	t_ok "a VIP address or a prefix covering 198.19/16 is refused"
fi

dmsc_net_exec c ip -4 addr show dev eth0 >"$work/c-addr" 2>&1
t_check "c has exactly one address on eth0" \
	test "$(grep -c 'inet ' "$work/c-addr")" = 1
dmsc_net_exec c ip route show >"$work/c-routes" 2>&1
if grep -q '^default' "$work/c-routes"; then
	t_fail "c has no default route"
else
	t_ok "c has no default route"
fi
t_check "c routes 198.18.0.0/16 on eth0" has "$work/c-routes" '^198\.18\.0\.0/16 dev eth0'
if dmsc_net_exec c ip route get 198.19.0.10 >/dev/null 2>&1; then
	t_fail "198.19.0.10 (a VIP) is unroutable from c"
else
	t_ok "198.19.0.10 (a VIP) is unroutable from c"
fi

# ---- dmsc-testsrv id mode and dmsc-probe ---------------------------------

t_check "testsrv (id) ready in b1" start_server b1 id 198.18.1.2:9000

dmsc_net_exec c "$probe" --connect 198.18.1.2:9000 --count 200 --timeout-ms 2000 \
	--max-seconds 30 >"$work/p200" 2>&1
t_check "probe: 200 connections, ok=200, peer_is_target=200" \
	has "$work/p200" '^connections=200 ok=200 failed=0 peer_is_target=200$'
t_check "probe: backend b1 counted 200 times" has "$work/p200" '^backend b1 200 100\.00%$'

dmsc_net_exec c "$probe" --connect 198.18.1.2:9000 --count 20 --json \
	--max-seconds 30 >"$work/pjson" 2>&1
t_check "probe --json: one object with counts and backends" \
	has "$work/pjson" '^\{"connections":20,"ok":20,"failed":0,"peer_is_target":20,"backends":\{"b1":20\},"errors":\{\}.*\}$'

t0=$(now_ms)
dmsc_net_exec c "$probe" --connect 198.18.1.2:9000 --count 2000 --parallel 50 \
	--timeout-ms 2000 --max-seconds 30 >"$work/p2000" 2>&1
t1=$(now_ms)
echo "# 2000 connections, 50 in parallel: $((t1 - t0)) ms" >&2
t_check "probe: 2000 short connections, 50 in parallel, all ok" \
	has "$work/p2000" '^connections=2000 ok=2000 failed=0 peer_is_target=2000$'

t0=$(now_ms)
dmsc_net_exec c "$probe" --connect 198.19.0.10:80 --count 1 --timeout-ms 5000 \
	--max-seconds 10 >"$work/pvip" 2>&1
t1=$(now_ms)
t_check "untranslated VIP 198.19.0.10:80 fails with ENETUNREACH" \
	has "$work/pvip" '^error ENETUNREACH 1$'
# "at once": far below the 5 s connect timeout (mostly the cost of ip netns exec)
t_check "... and on the spot ($((t1 - t0)) ms)" test $((t1 - t0)) -lt 1500

dmsc_net_exec c "$probe" --connect 198.18.1.2:9999 --count 3 --json \
	--max-seconds 10 >"$work/prefused" 2>&1
t_check "closed port counted as ECONNREFUSED" \
	has "$work/prefused" '"failed":3,.*"errors":\{"ECONNREFUSED":3\}'

"$probe" --connect 198.18.1.2:9000 >/dev/null 2>&1
rc=$?
t_check "probe without --count is a usage error (exit 2, got $rc)" test "$rc" = 2

# ---- hold mode -----------------------------------------------------------

dmsc_net_exec c "$probe" --connect 198.18.1.2:9000 --hold-seconds 2 --interval-ms 100 \
	>"$work/phold" 2>&1
rc=$?
t_check "hold: a connection held 2 s, exit 0 (got $rc)" test "$rc" = 0
t_check "hold: held=1 errors=0 name=b1 peer_is_target=1" \
	has "$work/phold" '^held=1 exchanges=(1[5-9]|2[0-9]) errors=0 name=b1 peer_is_target=1$'

t_check "testsrv with --max-seconds 1 ready" start_server short id 198.18.1.2:9001 --max-seconds 1
dmsc_net_exec c "$probe" --connect 198.18.1.2:9001 --hold-seconds 4 --interval-ms 100 \
	--json >"$work/pbroken" 2>&1
rc=$?
t_check "hold: a connection the server drops exits 1 (got $rc)" test "$rc" = 1
t_check "hold: reports held=0 and the reason" \
	has "$work/pbroken" '^\{"held":0,"exchanges":[0-9]+,"errors":1,"name":"short","peer_is_target":1,"error":"(EOF|ECONNRESET)"\}$'
wait "$(cat "$work/srv-short.pid")"
rc=$?
t_check "testsrv --max-seconds exits by itself with 0 (got $rc)" test "$rc" = 0

# ---- http, echo, sink ----------------------------------------------------

t_check "testsrv (http) ready in b1" start_server web http 198.18.1.2:8080
dmsc_net_exec c curl -sS --noproxy '*' --max-time 5 http://198.18.1.2:8080/ >"$work/curl1" 2>&1
t_check "curl from c gets the name" test "$(cat "$work/curl1")" = web
dmsc_net_exec c curl -sS -v --noproxy '*' --max-time 5 http://198.18.1.2:8080/a \
	http://198.18.1.2:8080/b >"$work/curl2" 2>"$work/curl2.err"
t_check "http keep-alive: two requests on one connection" \
	has "$work/curl2.err" '[Rr]e-?using (existing )?connection'
t_check "... both answered" test "$(cat "$work/curl2")" = $'web\nweb'
dmsc_net_exec c curl -sS -0 -D - -o /dev/null --noproxy '*' --max-time 5 \
	http://198.18.1.2:8080/ >"$work/curl10" 2>&1
t_check "HTTP/1.0 gets Connection: close" has "$work/curl10" $'^Connection: close\r?$'
dmsc_net_exec c curl -sS -D - -o /dev/null --noproxy '*' --max-time 5 \
	-H 'Connection: close' http://198.18.1.2:8080/ >"$work/curlclose" 2>&1
t_check "\"Connection: close\" is honoured" has "$work/curlclose" $'^Connection: close\r?$'

t_check "testsrv (echo) ready in b1" start_server echo echo 198.18.1.2:9002
# shellcheck disable=SC2016 # expanded by the inner bash
dmsc_net_exec c timeout 5 bash -c \
	'exec 3<>/dev/tcp/198.18.1.2/9002 && echo hello-echo >&3 && read -r line <&3 && echo "$line"' \
	>"$work/echo" 2>&1
t_check "echo mode echoes" test "$(cat "$work/echo")" = hello-echo

t_check "testsrv (sink) ready in b1" start_server sink sink 198.18.1.2:9003
dmsc_net_exec c timeout 5 bash -c \
	'exec 3<>/dev/tcp/198.18.1.2/9003 && head -c 1048576 /dev/zero >&3 && exec 3>&- && echo sent' \
	>"$work/sink" 2>&1
t_check "sink mode swallows 1 MiB" test "$(cat "$work/sink")" = sent

ip netns exec "${prefix}b1" "$testsrv" --listen 198.18.1.2:9004 --name term --max-seconds 60 \
	>"$work/srv-term.out" 2>&1 &
term_pid=$!
dmsc_wait_ready "$work/srv-term.out" 5
kill -TERM "$term_pid"
wait "$term_pid"
rc=$?
t_check "testsrv exits 0 on SIGTERM (got $rc)" test "$rc" = 0

# ---- cgroups -------------------------------------------------------------

cg2=$(dmsc_cgroup2_mount)
t_check "cgroup2 mount found ($cg2)" test -n "$cg2" -a -f "$cg2/cgroup.procs"
cg=$(dmsc_cgroup_make "${prefix}cg/inner")
t_check "dmsc_cgroup_make makes $cg" test "$cg" = "$cg2/dmsc-test/${prefix}cg/inner" -a -d "$cg"
dmsc_run_in_cgroup "$cg" cat /proc/self/cgroup >"$work/selfcg" 2>&1
t_check "dmsc_run_in_cgroup runs the command in the cgroup" \
	has "$work/selfcg" "^0::/dmsc-test/${prefix}cg/inner\$"
# cgroupfs files report size 0: read them, do not test -s
dmsc_run_in_cgroup "$cg" dmsc_net_exec c sleep 60 &
cg_job=$!
leftover=
for _ in $(seq 50); do
	leftover=$(head -n 1 "$cg/cgroup.procs")
	[[ -n "$leftover" ]] && break
	sleep 0.1
done
t_check "a process left running in the cgroup" test -n "$leftover"
dmsc_cgroup_cleanup
wait "$cg_job" 2>/dev/null # reaps the killed job quietly
t_check "dmsc_cgroup_cleanup kills it and removes the cgroups" \
	test -n "$leftover" -a ! -e "/proc/${leftover:-0}" -a ! -e "$cg2/dmsc-test/${prefix}cg"

# ---- cleanup -------------------------------------------------------------

mapfile -t srv_pids < <(for ns in hub c b1; do ip netns pids "${prefix}$ns" 2>/dev/null; done)
echo "# processes in our namespaces before cleanup: ${srv_pids[*]}" >&2
dmsc_net_cleanup
left=$(ip netns list | awk -v p="$prefix" 'index($1, p) == 1')
t_check "dmsc_net_cleanup removes every namespace" test -z "$left"
alive=0
for pid in "${srv_pids[@]}"; do
	kill -0 "$pid" 2>/dev/null && alive=$((alive + 1))
done
t_check "... and every process that ran in them" test "$alive" = 0
t_check "dmsc_net_cleanup can be called twice" dmsc_net_cleanup

t_summary || exit 1
exit 0
