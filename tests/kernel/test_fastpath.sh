#!/usr/bin/env bash
# The same-host fast path (sockops + sk_msg) on the running kernel: byte-exact
# integrity through it, the edge cases that broke other projects' redirects,
# accelerate on/off/auto, and flows that must never be redirected.
#
# Hosts: c (client, 198.18.0.2), s (server in the mesh, 198.18.1.2), r (a
# server outside the mesh cgroup, 198.18.1.3), each its own network
# namespace, so every connection crosses two veths without the fast path.
set -u
. "$(cd "$(dirname "$0")/../lib" && pwd)/kernel.sh"
dmsc_suite_begin fp dfp$$
STREAM=$BIN/tools/dmsc-stream
MiB=$((1 << 20))
for tool in iperf3 curl jq; do
	command -v "$tool" >/dev/null || { t_fail "$tool is installed (scripts/install-deps.sh)"; t_summary; exit 1; }
done
dmsc_net_hosts c=198.18.0.2/16 s=198.18.1.2/16 r=198.18.1.3/16 || exit 1
dmsc_cgroups MESH=mesh OUTSIDE=outside || exit 1

# mesh_run CGROUP HOST cmd...
mesh_run() {
	local cg=$1 host=$2
	shift 2
	dmsc_run_in_cgroup "$cg" dmsc_net_exec "$host" "$@"
}

# Servers: integrity servers in the mesh (one that closes early), an HTTP
# server and iperf3 in the mesh, an integrity server outside it.
mesh_run "$MESH" s "$STREAM" server --listen 198.18.1.2:7000 --max-seconds 3600 >"$T/s7000.out" 2>&1 &
mesh_run "$MESH" s "$STREAM" server --listen 198.18.1.2:7001 --close-after $MiB --max-seconds 3600 \
	>"$T/s7001.out" 2>&1 &
mesh_run "$MESH" s "$STREAM" server --listen 198.18.1.2:7002 --stall-ms 2000 --max-seconds 3600 \
	>"$T/s7002.out" 2>&1 &
# (a reader that shrinks its receive buffer once accepted, 6d)
mesh_run "$MESH" s "$STREAM" server --listen 198.18.1.2:7004 --rcvbuf 16384 --stall-ms 500 --max-seconds 3600 \
	>"$T/s7004.out" 2>&1 &
mesh_run "$MESH" s "$SRV" --name s --mode id --listen 198.18.1.2:9080 --max-seconds 3600 >"$T/id.out" 2>&1 &
mesh_run "$MESH" s "$SRV" --name s --mode http --listen 198.18.1.2:8080 --max-seconds 3600 >"$T/http.out" 2>&1 &
# On [::]: the accepted sockets are IPv6 ones carrying IPv4 (::ffff:a.b.c.d).
mesh_run "$MESH" s timeout 3600 iperf3 -s -p 5201 >"$T/iperf3s.out" 2>&1 &
mesh_run "$OUTSIDE" r "$STREAM" server --listen 198.18.1.3:7000 --max-seconds 3600 >"$T/r7000.out" 2>&1 &
for f in s7000 s7001 s7002 s7004 id http r7000; do
	dmsc_backends_ready "$T/$f.out"
done

svc() { # NAME VIP PORT BACKEND BPORT [ACCEL]
	printf '{ "name": "%s", "vip": "%s", "port": %s, "backends": [ { "address": "%s", "port": %s } ]%s }' \
		"$1" "$2" "$3" "$4" "$5" "${6:+, \"accelerate\": \"$6\"}"
}
{
	echo '{ "services": ['
	# "on": the edge cases below are about the fast path's mechanics, and
	# "auto" would take a service off it after a bulk flow (tested apart).
	svc stream 198.19.0.20 7000 198.18.1.2 7000 on; echo ,
	svc off 198.19.0.21 7000 198.18.1.2 7000 off; echo ,
	svc on 198.19.0.22 7000 198.18.1.2 7000 on; echo ,
	svc web 198.19.0.23 80 198.18.1.2 8080; echo ,
	svc perf 198.19.0.24 5201 198.18.1.2 5201; echo ,
	svc remote 198.19.0.25 7000 198.18.1.3 7000; echo ,
	svc closer 198.19.0.26 7001 198.18.1.2 7001; echo ,
	svc slow 198.19.0.27 7002 198.18.1.2 7002; echo ,
	svc hold 198.19.0.28 9080 198.18.1.2 9080; echo ,
	svc tfo 198.19.0.29 7000 198.18.1.2 7000 on; echo ,
	svc slowon 198.19.0.30 7002 198.18.1.2 7002 on; echo ,
	svc shrunk 198.19.0.44 7004 198.18.1.2 7004 on
	echo '] }'
} >"$T/policy.json"

"$CTL" install --cgroup "$MESH" -o json >"$T/install.json"
t_eq "install attaches the fast path" \
	"$(jq -c '[.fastpath, (.fastpath_note | test("attached"))]' "$T/install.json")" '[true,true]'
t_check "status shows sockops and sk_msg attached" bash -c \
	"'$CTL' status -o json | jq -e '[.hooks[] | select(.fastpath) | .attached] == [true, true]' >/dev/null"
t_check "apply a policy with accelerate auto, on and off" "$CTL" apply "$T/policy.json"

# Whether this kernel lets the fast path read a reader's backlog
# (sk_psock.msg_tot_len, found through BTF as the program does): if not, a
# writer is never sent back for a slow reader, and auto sends 64 KiB+ writes
# to the stack instead (bulk_fallback).
BACKLOG_KNOWN=0
bpftool btf dump file /sys/kernel/btf/vmlinux format c 2>/dev/null |
	awk '/^struct sk_psock \{/,/^\};/' | grep -q msg_tot_len && BACKLOG_KNOWN=1
echo "# reader backlog readable (sk_psock.msg_tot_len): $BACKLOG_KNOWN"
# The default bound: 64 MiB, at most tcp_mem[1] / 8 (in pages).
BOUND=$(awk -v page="$(getconf PAGESIZE)" '{ b = int($2 * page / 8); m = 64 * 1048576; print (b < m ? b : m) }' /proc/sys/net/ipv4/tcp_mem)
BOUND_MIB=$((BOUND / MiB))
echo "# default backlog bound: $BOUND bytes"

# fp SERVICE FIELD: a fast path counter of a service ("direct": no VIP).
fp() {
	if [[ $1 == direct ]]; then
		"$CTL" stats -o json | jq ".fastpath.direct.$2"
	else
		"$CTL" stats -o json | jq ".services[] | select(.name == \"$1\") | .fastpath.$2"
	fi
}

# Whether this kernel charges the bytes a redirect queues at a reader to the
# reader's receive memory (sk_rmem_alloc: Linux 6.18, and the matrix's 6.1.0-57
# and 6.12 guests, probed; not 5.10). There a
# writer leaves the fast path once its reader lags by its receive buffer
# (docs/fastpath.md: beyond that TCP drops a RST that meets the reader inside
# recv()), so bulk is redirected only while its reader keeps up. Seen in
# ss -m of a stalled reader holding 64 KiB of redirected bytes. Only a probe
# whose bytes were redirected tells: one whose client wrote before its peer
# registered (no_peer, a race a slow guest loses now and then) went on the
# stack, where the receive queue holds them whatever the kernel: tried again.
RMEM_CHARGED=0
for ((try = 1; try <= 5; try++)); do
	red0=$(fp slowon redirected_bytes) rmax=0
	# 16 KiB in writes of at most 4 KiB: all of it is redirected whatever
	# the kernel (a writer leaves only past half its reader's buffer,
	# decision 49), so a probe that redirected less lost the no_peer race
	mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.30:7002 --bytes 16K --max-write 4K \
		--seed 9 >/dev/null &
	probe=$!
	for ((i = 0; i < 40; i++)); do
		r=$(dmsc_net_exec s ss -tmnH state connected '( sport = :7002 )' | grep -o 'skmem:(r[0-9]*' |
			grep -o '[0-9]*$' | sort -n | tail -n 1)
		((${r:-0} > rmax)) && rmax=${r:-0}
		((rmax >= 16384)) && break
		sleep 0.05
	done
	wait "$probe"
	if (($(fp slowon redirected_bytes) - red0 >= 16384)); then
		((rmax >= 16384)) && RMEM_CHARGED=1
		break
	fi
	echo "# probe $try: its bytes were not redirected (no_peer), again"
done
echo "# redirected bytes charged to the reader's receive memory: $RMEM_CHARGED"

# tcp_prunes HOST: times the TCP of HOST's namespace pruned a receive queue
# over its buffer, or dropped a segment for it.
tcp_prunes() {
	dmsc_net_exec "$1" nstat -asz TcpExtPruneCalled TcpExtTCPRcvQDrop | awk '/^TcpExt/ { n += $2 } END { print n + 0 }'
}

# tcp_ext HOST: the receive-side TCP counters of HOST's namespace, "NAME VALUE"
tcp_ext() {
	dmsc_net_exec "$1" nstat -asz TcpExtPruneCalled TcpExtRcvPruned TcpExtTCPRcvCollapsed TcpExtTCPRcvCoalesce \
		TcpExtTCPRcvQDrop TcpExtTCPBacklogCoalesce TcpExtTCPZeroWindowDrop TcpExtTCPWantZeroWindowAdv |
		awk '/^TcpExt/ { print $1, $2 }'
}

# server_check FILE FROM COUNT: the COUNT server lines after line FROM all
# received every byte, in order, up to EOF. Waits (bounded: 60 s, a reader
# in a loaded TCG guest can be slow) for the lines.
server_check() {
	local file=$1 from=$2 count=$3
	t_wait 60 has_lines "$file" $((from + count))
	grep '^{"conn"' "$file" | tail -n +$((from + 1)) | head -n "$count" |
		jq -s -c '[length, ([.[] | select(.first_bad == -1 and .eof and .got == .expected and .error == "")] | length)]'
}
lines() { grep -c '^{"conn"' "$1"; }
# has_lines FILE N: FILE has N server lines or more (for t_wait).
has_lines() { (($(lines "$1") >= $2)); }
# fp_left SERVICE: writers of a service that left the fast path for a reader
# or memory: its own backlog bound, the host budget, TCP memory short.
fp_left() {
	"$CTL" stats -o json | jq ".services[] | select(.name == \"$1\") | .fastpath |
		.backlog_fallback + .budget_fallback + .pressure_fallback"
}
# server_lines FILE FROM COUNT: what those server lines say, for a label.
server_lines() {
	grep '^{"conn"' "$1" | tail -n +$(($2 + 1)) | head -n "$3" |
		jq -r '"got \(.got) of \(.expected), first_bad \(.first_bad), eof \(.eof), error \(.error)"' | paste -sd';'
}
jqe() { jq -e "$@" >/dev/null; }

# 1. Byte-exact integrity through the fast path: 4 connections at once, each
#    64 MiB each way in writes of 1 B to 1 MiB.
n0=$(lines "$T/s7000.out")
mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.20:7000 --conns 4 --bytes 64M --back-bytes 64M \
	--seed 11 --max-seconds 600 >"$T/bulk.json"
t_eq "4 x 64 MiB each way: every connection ok at the client" "$(jq -c '[.ok, .failed, .first_bad]' "$T/bulk.json")" "[4,0,-1]"
t_eq "4 x 64 MiB each way: the server got every byte in order" "$(server_check "$T/s7000.out" "$n0" 4)" "[4,4]"
# A client whose first write beats its server end's registration (the final
# ACK still in a softirq queue) stays on the stack, counted in no_peer. Both
# counters can count one connection: the server end found the pending entry
# and registered (paired) while its client's first write was deciding without
# it (no_peer); the server then redirects, the client sends on the stack.
fp_paired=$(fp stream paired) fp_nopeer=$(fp stream no_peer)
t_eq "each of the 4 connections was paired or its client wrote first (no_peer)" \
	"$(jq -n --argjson p "$fp_paired" --argjson n "$fp_nopeer" '$p <= 4 and $n <= 4 and $p + $n >= 4')" true
# A reader that falls more than DMSC_FP_BACKLOG_MAX behind (this machine is
# shared: a reader may be descheduled) sends its writer to the stack; that
# is counted, and the bytes above were checked across the switch.
if ((RMEM_CHARGED)); then
	t_eq "the fast path carried bytes until a reader fell its receive buffer behind" \
		"$(jq -n --argjson r "$(fp stream redirected_bytes)" --argjson l "$(fp_left stream)" '$r > 0 and $l > 0')" true
else
	t_range "the fast path carried the bytes (redirected MiB)" \
		"$(($(fp stream redirected_bytes) / MiB))" 16 513
fi
t_eq "bytes went on the stack only after a writer left the fast path for a slow reader" \
	"$(jq -n --argjson m "$(fp stream stack_msgs)" --argjson b "$(fp_left stream)" --argjson n "$(fp stream no_peer)" '$m == 0 or $b > 0 or $n > 0')" true
echo "# stream: redirected $(($(fp stream redirected_bytes) / MiB)) MiB, $(fp stream backlog_fallback) writers left for a slow reader"

# 2. The checker is not blind: one flipped byte is reported where it is.
n0=$(lines "$T/s7000.out")
mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.20:7000 --bytes 4M --corrupt-at 3000001 >/dev/null
t_wait 30 has_lines "$T/s7000.out" $((n0 + 1))
t_eq "a corrupted byte is caught at its offset" \
	"$(grep '^{"conn"' "$T/s7000.out" | tail -n +$((n0 + 1)) | head -n 1 | jq .first_bad)" 3000001

# 3. Half-close: the client is done writing long before the server.
n0=$(lines "$T/s7000.out")
mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.20:7000 --conns 2 --bytes 1M --back-bytes 32M \
	--seed 12 >"$T/half.json"
t_eq "half-close: the client reads 32 MiB after its shutdown(SHUT_WR)" "$(jq -c '[.ok, .failed]' "$T/half.json")" "[2,0]"
t_eq "half-close: the server got every byte and the EOF" "$(server_check "$T/s7000.out" "$n0" 2)" "[2,2]"

# 4. Closed while messages are in flight: the client closes right after its
#    last write; the server must still read all of it, then EOF.
n0=$(lines "$T/s7000.out")
mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.20:7000 --conns 4 --bytes 32M --no-read \
	--seed 13 >"$T/inflight.json"
t_eq "closed in flight: the client wrote everything" "$(jq -c '[.ok, .failed]' "$T/inflight.json")" "[4,0]"
t_eq "closed in flight: the server got every byte, then EOF" "$(server_check "$T/s7000.out" "$n0" 4)" "[4,4]"

# 5. RST mid-transfer: no hang, no corrupt byte.
n0=$(lines "$T/s7000.out")
SECONDS=0
mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.20:7000 --conns 2 --bytes 64M --rst-after 3M \
	--seed 14 --max-seconds 20 >"$T/rst.json"
t_eq "RST: the client resets after 3 MiB" "$(jq -c '[.ok, .failed]' "$T/rst.json")" "[2,0]"
t_wait 60 has_lines "$T/s7000.out" $((n0 + 2))
t_eq "RST: the server saw the end of both connections, no corrupt byte" \
	"$(grep '^{"conn"' "$T/s7000.out" | tail -n +$((n0 + 1)) | jq -s -c '[length, ([.[] | select(.first_bad == -1 and .got <= 3145728 and .error != "TIMEOUT")] | length)]')" "[2,2]"
t_range "RST: over in seconds" "$SECONDS" 0 15

# 6. The peer closes mid-transfer: the writer gets an error, not a hang.
n0=$(lines "$T/s7001.out")
SECONDS=0
mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.26:7001 --conns 2 --bytes 64M --seed 15 \
	--max-seconds 20 >"$T/peerclose.json"
t_check "peer closed: the writer sees ECONNRESET or EPIPE, not a timeout ($(jq -r .errors "$T/peerclose.json"))" \
	jqe '.failed == 2 and (.errors | test("ECONNRESET|EPIPE")) and (.errors | test("TIMEOUT") | not)' "$T/peerclose.json"
t_eq "peer closed: the server read exactly 1 MiB, in order" \
	"$(grep '^{"conn"' "$T/s7001.out" | tail -n +$((n0 + 1)) | jq -s -c '[length, ([.[] | select(.first_bad == -1 and .got == 1048576)] | length)]')" "[2,2]"
t_range "peer closed: over in seconds" "$SECONDS" 0 15

# 6b. A slow reader: the writer may run ahead by the bound ($BOUND_MIB MiB here)
#     on the fast path, then leaves it for TCP and its window. The bytes
#     before and after the switch arrive in order.
# Where redirected bytes are charged, writes of up to 16 KiB: the writer
# leaves with room left in its reader's receive buffer for the window the
# reader's TCP advertised (docs/design.md decisions 49 and 73), so the
# reader's TCP never prunes or drops what follows.
n0=$(lines "$T/s7002.out") sl_np0=$(fp slow no_peer) sl_wf0=$(fp slow window_fallback) sl_w=()
((RMEM_CHARGED)) && sl_w=(--max-write 16384)
prune0=$(tcp_prunes s)
tcp_ext s >"$T/slow-nstat0.txt"
# (the readers' sockets while they read nothing, for the record: the fullest
# one seen against its buffer, its receive memory r, buffer rb and TCP's
# window; 3.5 s at most)
if ((RMEM_CHARGED)); then
	for ((i = 0; i < 50; i++)); do
		dmsc_net_exec s ss -tmiHO state connected '( sport = :7002 )' 2>/dev/null
		sleep 0.05
	done >"$T/slow-ss.txt" &
	sl_ss=$!
fi
mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.27:7002 --conns 2 --bytes 96M \
	--back-bytes 1M --seed 17 "${sl_w[@]}" >"$T/slow.json"
t_eq "slow reader: every connection ok ($(jq -r .errors "$T/slow.json"))" "$(jq -c '[.ok, .failed]' "$T/slow.json")" "[2,0]"
t_eq "slow reader: the server got every byte in order across the switch ($(server_lines "$T/s7002.out" "$n0" 2))" \
	"$(server_check "$T/s7002.out" "$n0" 2)" "[2,2]"
if ((RMEM_CHARGED)); then
	# The first writer leaves at its reader's receive buffer and marks the
	# service bulk: the second connection may be plain TCP from the start.
	# (a receive buffer grows with autotuning up to tcp_rmem's maximum: two
	# readers' worth is the most the bound lets through, well under the
	# two backlog bounds the writers would otherwise run ahead by)
	rmem_max=$(awk '{ print $3 }' /proc/sys/net/ipv4/tcp_rmem)
	# (a client that wrote before its peer registered, no_peer, never took
	# the fast path: with both so, none had a writer to leave)
	sl_l=$(fp_left slow) sl_r=$(fp slow redirected_bytes) sl_p=$(fp slow pressure_fallback)
	sl_np=$(($(fp slow no_peer) - sl_np0))
	t_eq "slow reader: the writers left at the reader's receive buffer (left $sl_l, no_peer $sl_np, redirected $sl_r < 2 x $rmem_max, pressure $sl_p)" \
		"$(jq -n --argjson l "$sl_l" --argjson n "$sl_np" --argjson r "$sl_r" --argjson p "$sl_p" --argjson m "$rmem_max" \
			'($l >= 1 or $n >= 2) and $r < 2 * $m and $p == 0')" true
	# (Debian's 6.1.0-57 and 6.12.95 pruned now and then in the CI's TCG
	# guests; at default settings half the buffer holds the advertised
	# window's payload, and what a slow guest can still meet is its
	# segments' own overhead, which the window rule does not bound:
	# docs/design.md decision 73. So below 6.13 the count is printed, not
	# checked; the lines above tell the cause if it is not 0.)
	wait "$sl_ss"
	sl_pr=$(($(tcp_prunes s) - prune0))
	echo "# slow reader: $(($(fp slow window_fallback) - sl_wf0)) writers left for the reader's window; fullest reader socket seen: $(
		awk 'match($0, /skmem:\(r[0-9]+,rb[0-9]+/) { split(substr($0, RSTART + 8, RLENGTH - 8), v, ",rb"); if (v[2] > 0 && v[1] / v[2] >= m) { m = v[1] / v[2]; l = $0 } } END { print l }' "$T/slow-ss.txt" |
			grep -oE 'skmem:\([^)]*\)|rcv_(space|ssthresh|wnd):[0-9]+|bytes_received:[0-9]+|segs_in:[0-9]+' | paste -sd' ')"
	echo "# slow reader: the reader's TCP meanwhile: $(tcp_ext s | awk 'NR == FNR { a[$1] = $2; next } $2 != a[$1] { printf "%s +%d ", $1, $2 - a[$1] }' "$T/slow-nstat0.txt" -)"
	IFS=. read -r kv_maj kv_min _ < /proc/sys/kernel/osrelease
	if ((kv_maj > 6 || (kv_maj == 6 && kv_min >= 13))); then
		t_eq "slow reader: the reader's TCP pruned or dropped nothing after the writers left (TcpExtPruneCalled + TcpExtTCPRcvQDrop)" \
			"$sl_pr" 0
	else
		echo "# slow reader: the reader's TCP pruned or dropped $sl_pr times after the writers left (not checked before 6.13)"
	fi
elif ((BACKLOG_KNOWN)); then
	# (the servers' 1 MiB answers may leave too: the two stalled queues
	# are the host budget, and a writer's share is refreshed only when it
	# writes, so theirs can still count when the answers are written)
	t_range "slow reader: both writers left the fast path" "$(fp_left slow)" 2 4
	t_eq "slow reader: both for the reader (bound or host budget), not memory pressure" \
		"$(fp slow pressure_fallback)" 0
	# (two bounds are also the host budget: the second writer may leave
	# for the budget a message or two before its own bound)
	t_range "slow reader: each writer ran ahead about the bound ($BOUND_MIB MiB), not more (redirected MiB)" \
		"$(($(fp slow redirected_bytes) / MiB))" $((2 * BOUND_MIB - 3)) $((2 * BOUND_MIB + 8))
else
	# (both clients, and the servers' writers of the 1 MiB answer)
	t_range "slow reader, backlog unreadable: auto sent the bulk writers to the stack" \
		"$(fp slow bulk_fallback)" 2 4
fi
t_range "slow reader: then the writers' verdicts sent them to the stack" "$(fp slow stack_msgs)" $((2 - RMEM_CHARGED)) 100000
# auto learned that this service runs bulk: its next connection is plain TCP
# from the start (no sockmap at all), and still byte-exact.
reg0=$(fp slow registered)
# (counted from here: on a kernel without a readable backlog the second of the
# two slow connections may already have been skipped, if it connected after
# the first one marked the service)
skip0=$(fp slow bulk_skip)
# The service stays off for 60 s (DMSC_FP_BULK_HOLD_NS) after its last
# fallback; a loaded TCG guest can spend that before the next connection.
# hold_left: seconds of it left, from the service's bulk_seen_ns and
# CLOCK_MONOTONIC (bpf_ktime_get_ns's clock); empty if unreadable or never
# marked (then checked strictly).
hold_left() {
	local id seen now
	id=$("$CTL" show services -o json | jq '.services[] | select(.name == "slow") | .id')
	seen=$(bpftool -j map lookup pinned "$DMSC_PIN_DIR/maps/dmsc_fp_svc" \
		key $((id & 255)) $((id >> 8 & 255)) $((id >> 16 & 255)) $((id >> 24 & 255)) |
		jq '.formatted.value.bulk_seen_ns // empty | select(. > 0)')
	now=$(/usr/bin/python3 -c 'import time; print(time.monotonic_ns())')
	[[ -n $seen && -n $now ]] && echo $(((seen + 60000000000 - now) / 1000000000))
}
left=$(hold_left)
n0=$(lines "$T/s7002.out")
mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.27:7002 --bytes 8M --back-bytes 1M \
	--seed 18 >"$T/slow2.json"
t_eq "auto after bulk: the next connection is ok" "$(jq -c '[.ok, .failed]' "$T/slow2.json")" "[1,0]"
t_eq "auto after bulk: the server got every byte" "$(server_check "$T/s7002.out" "$n0" 1)" "[1,1]"
if [[ -n $left && $left -lt 10 ]]; then
	echo "# auto after bulk: ${left}s of the 60 s hold were left before the next connection (a slow machine): bulk_skip not checked"
else
	t_eq "auto after bulk: the next connection was not registered (bulk_skip; ${left:-?}s of the hold left)" \
		"$(($(fp slow registered) - reg0)):$(($(fp slow bulk_skip) - skip0))" "0:1"
fi

# 6d. The window TCP advertised before the reader shrank its buffer: the
#     reader sets SO_RCVBUF 16 KiB (a 32 KiB buffer) once accepted, after its
#     handshake advertised ~64 KiB for the default one, and reads nothing
#     for 0.5 s after the header; the client writes once the server's
#     byte says the buffer is set (--await-ready). Where redirected bytes are charged, the writer leaves at
#     its first message that finds the buffer's room short of that window,
#     though half the buffer is not reached (4 KiB writes): what TCP may
#     send then is the window, not the half (docs/design.md decision 73).
#     (A client that wrote before its peer registered, no_peer, never
#     redirects: then nothing is left for the window.)
n0=$(lines "$T/s7004.out") wf0=$(fp shrunk window_fallback) np0=$(fp shrunk no_peer)
mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.44:7004 --await-ready --bytes 1M --max-write 4096 \
	--seed 19 >"$T/shrunk.json"
t_eq "shrunk buffer: the connection is ok, every byte in order" \
	"$(jq -c '[.ok, .failed]' "$T/shrunk.json"):$(server_check "$T/s7004.out" "$n0" 1)" "[1,0]:[1,1]"
if ((RMEM_CHARGED)); then
	wf=$(($(fp shrunk window_fallback) - wf0)) np=$(($(fp shrunk no_peer) - np0))
	t_eq "shrunk buffer: the writer left for the window its reader's TCP advertised (window_fallback $wf, no_peer $np)" \
		"$(jq -n --argjson w "$wf" --argjson n "$np" '$w == 1 or ($w == 0 and $n >= 1)')" true
fi

# 6c. TCP Fast Open: bytes written before ESTABLISHED go on the stack, so a
#     socket that wrote them never redirects.
dmsc_net_exec c sysctl -qw net.ipv4.tcp_fastopen=3 && dmsc_net_exec s sysctl -qw net.ipv4.tcp_fastopen=3
n0=$(lines "$T/s7000.out")
mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.29:7000 --fastopen --count 3 --bytes 2M \
	--back-bytes 2M --seed 19 >"$T/tfo.json"
t_eq "TCP Fast Open: 3 connections in a row ok ($(jq -r .errors "$T/tfo.json"))" "$(jq -c '[.ok, .failed]' "$T/tfo.json")" "[3,0]"
t_eq "TCP Fast Open: the server got every byte" "$(server_check "$T/s7000.out" "$n0" 3)" "[3,3]"
# The first connection fetches the cookie: its header waits in the write
# queue until ESTABLISHED, then goes on the stack; the pair registers, but
# that writer must stay on the stack (once, this raced: the next write was
# redirected past the header still in flight). The next two carry the
# header in the SYN and never register.
t_eq "TCP Fast Open: 2 never registered, 1 paired whose writer stayed on the stack" \
	"$(fp tfo early_data):$(fp tfo paired)" "3:1"

# 7. Many short connections in a row.
n0=$(lines "$T/s7000.out")
paired0=$(fp stream paired)
mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.20:7000 --conns 4 --count 250 --bytes 3000 \
	--back-bytes 5000 --seed 16 >"$T/short.json"
t_eq "1000 short connections: all ok" "$(jq -c '[.ok, .failed]' "$T/short.json")" "[1000,0]"
t_eq "1000 short connections: the server got every byte" "$(server_check "$T/s7000.out" "$n0" 1000)" "[1000,1000]"
# A client that writes before its server end registered stays on the stack
# (no_peer): rare, more so on a slow (emulated) machine.
t_range "1000 short connections were paired (no_peer: $(fp stream no_peer))" \
	"$(($(fp stream paired) - paired0))" 950 1000

# 8. accelerate: off and on.
n0=$(lines "$T/s7000.out")
mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.21:7000 --conns 2 --bytes 8M --back-bytes 8M >"$T/off.json"
t_eq "accelerate off: data ok" "$(jq -c '[.ok, .failed]' "$T/off.json")" "[2,0]"
t_eq "accelerate off: never registered nor redirected" \
	"$(fp off registered):$(fp off paired):$(fp off redirected_msgs):$(fp off accel_off)" "0:0:0:2"
mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.22:7000 --conns 2 --bytes 8M --back-bytes 8M >"$T/on.json"
t_eq "accelerate on: data ok" "$(jq -c '[.ok, .failed]' "$T/on.json")" "[2,0]"
# (a reader more than its receive buffer behind takes the writer off it)
t_eq "accelerate on: paired and redirected" \
	"$(fp on paired):$(jq -n --argjson r "$(fp on redirected_bytes)" --argjson c $RMEM_CHARGED '$r >= (if $c == 1 then 1 else 1048576 end)')" "2:true"

# 9. Never redirected: a peer outside the mesh cgroup, a client outside it.
mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.25:7000 --conns 2 --bytes 8M --back-bytes 8M >"$T/remote.json"
t_eq "server outside the mesh: data ok" "$(jq -c '[.ok, .failed]' "$T/remote.json")" "[2,0]"
t_eq "server outside the mesh: not paired, nothing redirected, the client fell back" \
	"$(fp remote paired):$(fp remote redirected_msgs):$(fp remote no_peer)" "0:0:2"
# (A stack verdict stands for the next 1 GiB without running the program
# again, so the counter sees each socket's first write to the stack.)
t_range "server outside the mesh: the client's writes went to the stack" "$(fp remote stack_msgs)" 2 100000
# (no peer: out of the sockhash at the first ACK of its data, on every
# kernel, so tcp_bpf's calls are no longer on its path: decision 88)
t_eq "server outside the mesh: both clients gave the native path back (released)" \
	"$(fp remote released)" 2
before=$("$CTL" stats -o json | jq -c .fastpath.total)
mesh_run "$OUTSIDE" c "$STREAM" client --connect 198.18.1.2:7000 --conns 2 --bytes 8M --back-bytes 8M >"$T/outc.json"
t_eq "client outside the mesh to a mesh server: data ok" "$(jq -c '[.ok, .failed]' "$T/outc.json")" "[2,0]"
t_eq "client outside the mesh: no counter moved (nothing registered)" \
	"$("$CTL" stats -o json | jq -c .fastpath.total)" "$before"
mesh_run "$MESH" c "$STREAM" client --connect 198.18.1.2:7000 --bytes 4M --back-bytes 4M >"$T/direct.json"
if ((RMEM_CHARGED)); then
	t_eq "two mesh sockets without a VIP: data ok, paired, redirected until a reader fell behind" \
		"$(jq .ok "$T/direct.json"):$(fp direct paired):$(jq -n --argjson r "$(fp direct redirected_bytes)" '$r > 0')" "1:1:true"
elif ((BACKLOG_KNOWN)); then
	t_eq "two mesh sockets without a VIP: data ok, paired, redirected" \
		"$(jq .ok "$T/direct.json"):$(fp direct paired):$(($(fp direct redirected_bytes) / MiB))" "1:1:8"
else
	t_eq "two mesh sockets without a VIP: data ok, paired, bulk writes sent to the stack" \
		"$(jq .ok "$T/direct.json"):$(fp direct paired):$(jq -n --argjson b "$(fp direct bulk_fallback)" '$b > 0')" "1:1:true"
fi

# 10. Clients nobody here wrote: iperf3 (both directions) and curl.
mesh_run "$MESH" c iperf3 -c 198.19.0.24 -p 5201 -t 2 -J >"$T/iperf.json" 2>&1
mesh_run "$MESH" c iperf3 -c 198.19.0.24 -p 5201 -t 2 -R -J >"$T/iperfR.json" 2>&1
t_check "iperf3 through the fast path ($(jq -r '.end.sum_received.bits_per_second / 1e9 | floor' "$T/iperf.json" 2>/dev/null) Gbit/s)" \
	jqe '.end.sum_received.bytes > 0 and (has("error") | not)' "$T/iperf.json"
t_check "iperf3 -R through the fast path" jqe '.end.sum_received.bytes > 0 and (has("error") | not)' "$T/iperfR.json"
got=$(jq '.end.sum_received.bytes + 0' "$T/iperf.json" 2>/dev/null || echo 0)
if ((BACKLOG_KNOWN)); then
	t_eq "iperf3's bytes were redirected (all, or until a slow reader sent the writer to TCP)" \
		"$(jq -n --argjson r "$(fp perf redirected_bytes)" --argjson b "$(fp_left perf)" --argjson g "${got:-0}" '$r > 0 and ($r >= $g or $b > 0)')" true
else
	t_eq "iperf3 through auto, backlog unreadable: its bulk writes went to the stack" \
		"$(jq -n --argjson b "$(fp perf bulk_fallback)" --argjson k "$(fp perf bulk_skip)" '$b > 0 or $k > 0')" true
fi
# (one curl for the 20, each request a connection of its own: a process
# costs seconds in a TCG guest)
urls=()
for ((i = 0; i < 20; i++)); do urls+=(http://198.19.0.23/); done
ok=$(mesh_run "$MESH" c curl -sS --max-time 5 -H 'Connection: close' "${urls[@]}" | grep -cx s)
t_eq "20 curl requests through the fast path" "$ok" 20
t_range "curl's requests and answers were redirected" "$(fp web redirected_msgs)" 40 100000

# 10c. A first write larger than half its reader's receive buffer (128 KiB
#      into the default 128 KiB) leaves the fast path before it, instead of
#      filling the reader's queue past its buffer (docs/design.md decision
#      72): iperf3's first data write comes after its cookie was read, into
#      an empty queue. Where the kernel does not charge redirected bytes and
#      the queue can be read, the rule is off once a queue showed it (printed,
#      not checked); 5.10 and 6.1 send such writes to the stack anyway (auto).
first_write_leaves() {
	local red left n0
	jq --argjson add "[$(svc firstperf 198.19.0.60 5201 198.18.1.2 5201), $(svc firststream 198.19.0.61 7000 198.18.1.2 7000)]" \
		'.services += $add' "$T/policy.json" >"$T/policy-first.json"
	t_check "apply two new auto services" "$CTL" apply "$T/policy-first.json"
	mesh_run "$MESH" c iperf3 -c 198.19.0.60 -p 5201 -l 128K -n 4M -J >"$T/iperf-first.json" 2>&1
	t_check "iperf3, 128 KiB writes, through a new service" \
		jqe '.end.sum_received.bytes > 0 and (has("error") | not)' "$T/iperf-first.json"
	red=$(fp firstperf redirected_bytes) left=$(($(fp_left firstperf) + $(fp firstperf bulk_fallback)))
	if ((RMEM_CHARGED || !BACKLOG_KNOWN)); then
		t_eq "... its first 128 KiB write left the fast path before it (left $left, redirected $red B < 128 KiB: the cookie and control messages)" \
			"$((left >= 1 && red < 131072))" 1
	else
		echo "# first 128 KiB write, kernel not charging: left $left, redirected $red B"
	fi
	n0=$(lines "$T/s7000.out")
	mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.61:7000 --bytes 8M --back-bytes 1M \
		--max-write 128K --seed 22 >"$T/first.json"
	t_eq "writes of up to 128 KiB through a new service: ok, every byte in order" \
		"$(jq -c '[.ok, .failed]' "$T/first.json"):$(server_check "$T/s7000.out" "$n0" 1)" "[1,0]:[1,1]"
}
first_write_leaves

# 10b. A service turned accelerate off while a connection is redirected
#      (docs/design.md decision 6: limits hold for established flows too): its
#      ends leave the fast path at their next message, without a lost byte.
# (held up to 20 s: the switch must come while it lives, and an apply in a
# loaded TCG guest took more than 5 s; ended once both ends left and a
# message went on the stack, $T/hold.stop)
mesh_run "$MESH" c "$BIN/tools/dmsc-probe" --connect 198.19.0.28:9080 --hold-seconds 20 \
	--interval-ms 50 --stop-file "$T/hold.stop" --json >"$T/hold.json" &
HOLD=$!
# Switch once the connection is redirected, however long it took to start.
hold_redirected() { (($(fp hold redirected_msgs) > 0)); }
t_wait 30 hold_redirected
jq '.services |= map(if .name == "hold" then . + {accelerate: "off"} else . end)' "$T/policy.json" >"$T/policy-off.json"
t_check "apply accelerate off to a service with a live redirected connection" "$CTL" apply "$T/policy-off.json"
hold_switched() {
	"$CTL" stats -o json | jq -e '.services[] | select(.name == "hold") | .fastpath |
		.policy_fallback >= 1 and .policy_fallback + .released >= 2 and .stack_msgs > 0' >/dev/null
}
t_wait 20 hold_switched
touch "$T/hold.stop"
wait "$HOLD"
t_eq "the held connection kept working across the switch" \
	"$?:$(jq -c '[.errors, .name]' "$T/hold.json")" '0:[0,"s"]'
# (the first end to write leaves for the policy; once its peer's queue is
# empty it takes the peer out of the sockhash, so the peer may never run the
# program again to leave by itself: released counts it)
t_eq "both ends left the fast path for the policy, after redirecting" \
	"$(jq -n --argjson p "$(fp hold policy_fallback)" --argjson l "$(fp hold released)" '$p >= 1 and $p + $l >= 2'):$(jq -n --argjson r "$(fp hold redirected_msgs)" --argjson s "$(fp hold stack_msgs)" '$r > 0 and $s > 0')" "true:true"

# 11. No leaked sockhash entry: once every connection is closed, the
#     sockhash and the pending table are empty.
for ((i = 0; i < 50; i++)); do
	st=$("$CTL" status -o json | jq -c '[.fastpath_sockets, .fastpath_pending]')
	[[ $st == "[0,0]" ]] && break
	sleep 0.1
done
t_eq "no sockhash or pending entry left after every connection closed" "$st" "[0,0]"
# A miss is a redirect whose peer had left the sockhash: only the service
# whose server closes mid-transfer may have them (at most one per connection).
t_eq "redirects missed their peer only where the peer closed mid-transfer" \
	"$("$CTL" stats -o json | jq -c '[.fastpath.total.miss == (.services[] | select(.name == "closer") | .fastpath.miss), (.services[] | select(.name == "closer") | .fastpath.miss <= 2)]')" "[true,true]"
t_eq "no registration failed" "$("$CTL" stats -o json | jq .fastpath.total.register_failed)" 0

"$CTL" stats >"$T/stats.txt" && sed -n '/fast path/,/stack_bytes/p' "$T/stats.txt"

# 11b. The backlog bound is an install option, kept by later installs.
prog_ids() { "$CTL" status -o json | jq -c '[.hooks[].prog_id]'; }
t_eq "the default bound is 64 MiB, at most tcp_mem[1] / 8" \
	"$("$CTL" status -o json | jq -c '[.fastpath_backlog_max, .fastpath_backlog_set]')" "[$BOUND,false]"
t_check "install --fastpath-backlog 8M replaces the programs in place" \
	"$CTL" install --cgroup "$MESH" --fastpath-backlog 8M
t_eq "status shows the 8 MiB bound" "$("$CTL" status -o json | jq .fastpath_backlog_max)" $((8 * MiB))
"$CTL" install --cgroup "$MESH" >/dev/null
t_eq "an install without the option keeps it" "$("$CTL" status -o json | jq .fastpath_backlog_max)" $((8 * MiB))
ids0=$(prog_ids)
t_eq "a bad --fastpath-backlog is refused with a message naming the option" \
	"$("$CTL" install --cgroup "$MESH" --fastpath-backlog 12Q 2>&1 >/dev/null | grep -c -- '--fastpath-backlog: "12Q" is not a byte count')" 1
"$CTL" install --cgroup "$MESH" --fastpath-backlog 12Q >/dev/null 2>&1
t_eq "a bad --fastpath-backlog: exit code 2, the programs and the bound untouched" \
	"$?:$(prog_ids):$("$CTL" status -o json | jq .fastpath_backlog_max)" "2:$ids0:$((8 * MiB))"
if ((BACKLOG_KNOWN)); then
	n0=$(lines "$T/s7002.out")
	red0=$(fp slowon redirected_bytes) fb0=$(fp slowon backlog_fallback)
	mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.30:7002 --bytes 24M --seed 21 >"$T/bound8.json"
	t_eq "8 MiB bound, slow reader: ok, every byte in order" \
		"$(jq -c '[.ok, .failed]' "$T/bound8.json"):$(server_check "$T/s7002.out" "$n0" 1)" "[1,0]:[1,1]"
	# (where the reader's receive buffer binds first, the writer leaves there)
	t_range "8 MiB bound: the writer left after about 8 MiB (redirected MiB)" \
		"$((($(fp slowon redirected_bytes) - red0) / MiB))" $((RMEM_CHARGED ? 0 : 8)) $((RMEM_CHARGED ? 0 : 10))
	t_eq "8 MiB bound: counted as a backlog fallback" "$(($(fp slowon backlog_fallback) - fb0))" 1
fi
"$CTL" install --cgroup "$MESH" --fastpath-backlog default >/dev/null
t_eq "install --fastpath-backlog default sets the default back" \
	"$("$CTL" status -o json | jq -c '[.fastpath_backlog_max, .fastpath_backlog_set]')" "[$BOUND,false]"

# 11c. Many slow readers at once (issue 10, items 7 and 16). 32 writers, each
#      past the per-connection bound, to readers that read nothing for 4 s,
#      under accelerate off (plain TCP: the reference), on and auto. A blocking
#      or polling writer must wait as on plain TCP: no send() error (before
#      the fix, "on" failed 26 of 32 with ENOMEM: redirected bytes pushed TCP
#      into memory pressure, where the kernel refuses to charge them). The
#      fast path holds at most its host budget (two bounds) more than plain TCP
#      (before: 614 MiB against 43 MiB under auto). And redirected bytes count
#      in the service's bytes_to/bytes_from, once.
mesh_run "$MESH" s "$STREAM" server --listen 198.18.1.2:7003 --stall-ms 4000 --max-seconds 800 \
	>"$T/s7003.out" 2>&1 &
dmsc_wait_ready "$T/s7003.out" 10 || t_fail "server s7003 ready"
jq --argjson add "[$(svc stalloff 198.19.0.40 7003 198.18.1.2 7003 off),
	$(svc stallon 198.19.0.41 7003 198.18.1.2 7003 on), $(svc stallauto 198.19.0.42 7003 198.18.1.2 7003),
	$(svc count 198.19.0.43 7000 198.18.1.2 7000 on)]" '.services += $add' "$T/policy.json" >"$T/policy-many.json"
t_check "apply the many-slow-readers services" "$CTL" apply "$T/policy-many.json"
BUDGET_MIB=$((2 * BOUND / MiB))
PER_SLOW=$((BOUND + 8 * MiB))
# (read in bash: an awk started every 0.1 s took a guest's only CPU from
# the writers)
tcp_mem_pages() {
	local k rest
	while read -r k rest; do
		[[ $k == TCP: && $rest =~ (^| )mem\ ([0-9]+) ]] && echo "${BASH_REMATCH[2]}"
	done </proc/net/sockstat
}
# many_slow VIP OUT: runs the 32 writers; prints the peak of the host's TCP
# memory (/proc/net/sockstat, pages) above its level before, in MiB, sampled
# every 0.1 s while the client runs (its own bound: 200 s; a TCG guest
# that shares the host with another took more than 90).
many_slow() {
	local base peak m i pid
	base=$(tcp_mem_pages)
	peak=$base
	mesh_run "$MESH" c "$STREAM" client --connect "$1:7003" --conns 32 --bytes $PER_SLOW --seed 31 \
		--max-seconds 200 >"$2" &
	pid=$!
	for ((i = 0; i < 2500; i++)); do
		m=$(tcp_mem_pages)
		((m > peak)) && peak=$m
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	wait "$pid"
	echo $(((peak - base) * $(getconf PAGESIZE) / MiB))
}
n0=$(lines "$T/s7003.out")
mem_off=$(many_slow 198.19.0.40 "$T/many-off.json")
t_eq "32 slow readers, plain TCP (off): every writer ok ($(jq -r .errors "$T/many-off.json"))" \
	"$(jq -c '[.ok, .failed]' "$T/many-off.json"):$(server_check "$T/s7003.out" "$n0" 32)" "[32,0]:[32,32]"
echo "# 32 slow readers: plain TCP held $mem_off MiB more at its peak (host budget $BUDGET_MIB MiB)"
for mode in on auto; do
	n0=$(lines "$T/s7003.out")
	to0=$("$CTL" stats -o json | jq ".services[] | select(.name == \"stall$mode\") | .bytes_to")
	vip=198.19.0.41
	[[ $mode == auto ]] && vip=198.19.0.42
	mem=$(many_slow $vip "$T/many-$mode.json")
	t_eq "32 slow readers, accelerate $mode: every writer ok, no send() error ($(jq -r .errors "$T/many-$mode.json"))" \
		"$(jq -c '[.ok, .failed, .errors]' "$T/many-$mode.json")" '[32,0,""]'
	t_eq "32 slow readers, accelerate $mode: the servers got every byte in order" \
		"$(server_check "$T/s7003.out" "$n0" 32)" "[32,32]"
	echo "# 32 slow readers, $mode: TCP memory peak +$mem MiB (plain TCP +$mem_off MiB), left: $(fp_left stall$mode), budget: $(fp stall$mode budget_fallback), pressure: $(fp stall$mode pressure_fallback)"
	if ((BACKLOG_KNOWN)); then
		# 64 MiB of slack for other tests running on this host
		t_range "32 slow readers, accelerate $mode: TCP memory held at most plain TCP's + the host budget ($BUDGET_MIB MiB) (MiB)" \
			"$mem" 0 $((mem_off + BUDGET_MIB + 64))
		if ((RMEM_CHARGED)); then
			# (each reader's receive buffer binds long before the budget)
			t_check "32 slow readers, accelerate $mode: writers left for their readers' receive buffers" \
				test "$(fp_left stall$mode)" -gt 0
		else
			t_check "32 slow readers, accelerate $mode: writers left for the host budget" \
				test "$(fp stall$mode budget_fallback)" -gt 0
		fi
	fi
	# Redirected bytes are payload; after a writer leaves, cgroup_skb counts
	# IP packets (headers: a few percent more). Never the same byte twice.
	t_range "32 slow readers, accelerate $mode: bytes_to counts every byte once, whichever path (MiB)" \
		"$((($("$CTL" stats -o json | jq ".services[] | select(.name == \"stall$mode\") | .bytes_to") - to0) / MiB))" \
		$((32 * PER_SLOW / MiB)) $((32 * PER_SLOW / MiB * 11 / 10))
done
inflight=
for ((i = 0; i < 50; i++)); do
	inflight=$("$CTL" stats -o json | jq .fastpath.inflight_bytes)
	[[ $inflight == 0 ]] && break
	sleep 0.1
done
t_eq "once every connection closed, the host budget is all given back (inflight_bytes)" "$inflight" 0

# Service byte counters over the fast path: 8 MiB to the service, 4 MiB back,
# all redirected (a reader that keeps up), counted at least once and not twice.
n0=$(lines "$T/s7000.out")
read -r to0 from0 < <("$CTL" stats -o json | jq -r '.services[] | select(.name == "count") | "\(.bytes_to) \(.bytes_from)"')
mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.43:7000 --bytes 8M --back-bytes 4M --seed 32 \
	>"$T/count.json"
t_eq "byte counters: the connection is ok" "$(jq -c '[.ok, .failed]' "$T/count.json"):$(server_check "$T/s7000.out" "$n0" 1)" "[1,0]:[1,1]"
read -r to1 from1 red < <("$CTL" stats -o json | jq -r '.services[] | select(.name == "count") | "\(.bytes_to) \(.bytes_from) \(.fastpath.redirected_bytes)"')
# (where the reader's receive buffer binds, the writer may leave early)
t_check "byte counters: the fast path carried it ($red bytes redirected)" test "$red" -ge $((RMEM_CHARGED ? 1 : 4 * MiB))
t_range "byte counters: bytes_to counts the 8 MiB (and the 32-byte header) once" \
	"$((to1 - to0))" $((8 * MiB + 32)) $((8 * MiB * 11 / 10))
t_range "byte counters: bytes_from counts the 4 MiB once" "$((from1 - from0))" $((4 * MiB)) $((4 * MiB * 11 / 10))
t_check "dmscctl stats -o json shows them (bytes_to >= 8 MiB)" bash -c \
	"'$CTL' stats -o json | jq -e '.services[] | select(.name == \"count\") | .bytes_to >= $((8 * MiB))' >/dev/null"

# 11d. The native path back (issue 16): a writer that left the fast path for
#      a slow reader takes its reader, then itself, out of the sockhash once
#      their redirected queues are empty, so the rest of the connection runs
#      on the kernel's own TCP path. Readers that wait every way the kernel
#      has (blocking recv, MSG_WAITALL, SO_RCVLOWAT, epoll, poll) get every
#      byte across both switches, in order, without hanging.
if ((BACKLOG_KNOWN)); then
	"$CTL" install --cgroup "$MESH" --fastpath-backlog 8M >/dev/null
	port=7010
	for mode in block waitall lowat epoll poll; do
		mesh_run "$MESH" s "$STREAM" server --listen 198.18.1.2:$port --stall-ms 1000 --read-mode $mode \
			--max-seconds 300 >"$T/native-$mode.out" 2>&1 &
		dmsc_wait_ready "$T/native-$mode.out" 10 || t_fail "server native-$mode ready"
		port=$((port + 1))
	done
	port=7010 add=
	for mode in block waitall lowat epoll poll; do
		add="$add${add:+,}$(svc native$mode 198.19.0.5$((port - 7010)) $port 198.18.1.2 $port on)"
		port=$((port + 1))
	done
	jq --argjson add "[$add]" '.services += $add' "$T/policy-many.json" >"$T/policy-native.json"
	t_check "apply the native-path services" "$CTL" apply "$T/policy-native.json"
	port=7010
	for mode in block waitall lowat epoll poll; do
		mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.5$((port - 7010)):$port --bytes 40M \
			--seed 41 --max-seconds 60 >"$T/native-$mode.json"
		t_eq "native path back, $mode reader: ok, every byte in order across both switches ($(server_lines "$T/native-$mode.out" 0 1))" \
			"$(jq -c '[.ok, .failed]' "$T/native-$mode.json"):$(server_check "$T/native-$mode.out" 0 1)" "[1,0]:[1,1]"
		t_eq "native path back, $mode reader: the writer left for the reader, then both ends left the sockhash" \
			"$(fp native$mode backlog_fallback):$(fp native$mode released)" "1:2"
		port=$((port + 1))
	done
	"$CTL" install --cgroup "$MESH" --fastpath-backlog default >/dev/null
fi

# 12. Uninstall while redirected bytes wait unread at a reader: the reader
#     still gets every one (the kernel keeps a registered socket's queue).
n0=$(lines "$T/s7002.out")
# (32 KiB in writes of at most 8 KiB where the reader's receive buffer bounds
# what it may hold unread: a writer leaves once a write would take the
# reader past half its buffer, 64 KiB of 128, decision 49)
UNREAD=$((RMEM_CHARGED ? 32 * 1024 : 2 * MiB))
# A client whose first write beats its server end's registration stays on
# the stack (no_peer; likelier on a loaded machine): then another connection,
# at most 5, until one was redirected.
for ((tries = 1; tries <= 5; tries++)); do
	red0=$(fp slowon redirected_bytes) np0=$(fp slowon no_peer)
	mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.30:7002 --bytes $UNREAD --no-read --seed 20 \
		--max-write 8K >"$T/uninst.json"
	(($(fp slowon no_peer) == np0 || tries == 5)) && break
done
t_eq "$UNREAD bytes (and the 32-byte header) redirected to a reader that has not read yet ($tries connections)" \
	"$(jq .ok "$T/uninst.json"):$(($(fp slowon redirected_bytes) - red0))" "1:$((UNREAD + 32))"
t_check "uninstall" "$CTL" uninstall
t_check "no pins are left" test ! -e "$DMSC_PIN_DIR"
t_eq "after uninstall the reader got every byte, in order" "$(server_check "$T/s7002.out" "$n0" "$tries")" "[$tries,$tries]"

# 13. On a kernel without sk_msg (played with DMSC_FEATURES_HIDE): the rest
#     of the datapath works, nothing is registered.
DMSC_FEATURES_HIDE=sk_msg "$CTL" install --cgroup "$MESH" -o json >"$T/install-nofp.json"
t_eq "install on a kernel without sk_msg leaves the fast path out and says so" \
	"$(jq -c '[.fastpath, (.fastpath_note | test("disabled"))]' "$T/install-nofp.json")" '[false,true]'
t_check "status shows both fast path hooks not attached (sockops too: both or neither)" bash -c \
	"DMSC_FEATURES_HIDE=sk_msg '$CTL' status -o json | jq -e '[.hooks[] | select(.fastpath) | .attached] == [false, false]' >/dev/null"
"$CTL" apply "$T/policy.json" >/dev/null
n0=$(lines "$T/s7000.out")
mesh_run "$MESH" c "$STREAM" client --connect 198.19.0.20:7000 --conns 2 --bytes 8M --back-bytes 8M \
	>"$T/nofp.json"
t_eq "without the fast path: VIP data ok" "$(jq -c '[.ok, .failed]' "$T/nofp.json")" "[2,0]"
t_eq "without the fast path: the server got every byte" "$(server_check "$T/s7000.out" "$n0" 2)" "[2,2]"
t_eq "without the fast path: nothing registered" "$(fp stream registered)" 0
t_check "uninstall again" "$CTL" uninstall
t_check "no pins are left again" test ! -e "$DMSC_PIN_DIR"

t_summary
