#!/usr/bin/env bash
# test_mtls_guard.sh: the kernel side of the guard of a backend of an
# `mtls` service on its own host (docs/design.md decisions 33, 44 and 70),
# over IPv4 and IPv6, cheap enough for the kernel matrix. dmscd runs on
# host b (its certificate, from a CA made here, names the host: node-b)
# with b's backends in its mesh cgroup; host a is another host on the
# bridge. Checks, for each family:
#   - a plain SYN from a to a backend of a `required` service is dropped
#     (curl times out), counted mtls_plain_refused; to one of a
#     `permissive` service it is let in, counted mtls_plain_admitted;
#     b's own connections (loopback) are not looked at;
#   - a workload of b outside the service's allow_from that connects
#     straight to the backend's address gets EPERM (connect4/connect6),
#     counted refused_access; one inside it connects; a permissive
#     backend is not checked.
# And b's tunnel under b's mesh cgroup (decision 76): dmscd, outside the
# mesh, with --tunnel-fastpath on, runs it in MESH/dmsc-tunnel; a workload of b connects to a VIP
# whose backend is on a (a's own `dmsc-l7 tunnel`, no dmscd there): its
# connections to b's tunnel are fast-path pairs, 200 KB each way byte-exact;
# then 8 connections of 2 MB each way, which fill the tunnels' sockets
# (with kTLS, the bytes OpenSSL waits to write stay put: decision 89).
# On the host (not in the matrix, DMSC_MATRIX: userspace, and a dmscd
# restart loads every program again) also the sweep of the guard's index
# (decision 74): bpftool writes into the pinned dmsc_be_mtls and
# dmsc_be_mtls6 an entry no backend needs in each and points the required
# IPv4 backend's entry at another backend (a plain client then gets in);
# dmscd's apply after a killed writer, and a restarted dmscd adopting the
# maps, each put the index back as it was: the stale entries deleted, the
# live ones kept, the plain SYN dropped again.
#
# Addresses: hosts 198.18.74.0/24 and 2001:2:74::/64, VIPs 198.19.74.10
# and 2001:2:174::10 (routed nowhere).
#
# Prints "ok - ..." / "not ok - ..." per check, then "N passed, M failed".
# Exit: 0 all passed, 1 a check failed, 77 skipped (not root, tools missing).
set -u
. "$(cd "$(dirname "$0")/../lib" && pwd)/kernel.sh"
suite_cleanup() { dmsc_stop TERM "${DPID:-}"; }
dmsc_suite_begin mtls-guard mtg$$
for cmd in curl jq nsenter python3 bpftool; do
	command -v "$cmd" >/dev/null || {
		echo "skip - needs $cmd"
		exit 77
	}
done
[[ -r /proc/net/if_inet6 ]] || { echo "skip - this kernel has no IPv6"; exit 77; }
LOG=$T/dmscd.log
A=198.18.74.1 B=198.18.74.2 A6=2001:2:74::1 B6=2001:2:74::2
VIP=198.19.74.10 VIP6=2001:2:174::10
lap() { echo "# [$SECONDS s] $1"; }

dmsc_net_hosts a=$A/16 b=$B/16 && dmsc_net_addr6 a "$A6/64" && dmsc_net_addr6 b "$B6/64" || exit 1
dmsc_cgroups MESH=mesh FRIEND=mesh/friend STRANGER=mesh/stranger || exit 1
REL=dmsc-test/$P/mesh # allow_from paths are relative to the cgroup2 mount
"$CTL" ca init "$T/ca" --trust-domain mesh.test >/dev/null &&
	"$CTL" ca issue "$T/ca" --host node-b --out "$T/b" >/dev/null &&
	"$CTL" ca issue "$T/ca" --host node-a --out "$T/a" >/dev/null
t_eq "a mesh CA, node-b's and node-a's certificates (dmscctl ca)" "$?" 0
# b's backends, in b's mesh cgroup: 8090 of required services, 8091 of
# permissive ones, on both families
dmsc_run_in_cgroup "$MESH" dmsc_net_exec b python3 "$TOP/tests/tools/v6-peer.py" serve --name g \
	--listen "$B:8090" --listen "$B:8091" --listen "[$B6]:8090" --listen "[$B6]:8091" \
	--max-seconds 300 >"$T/peer.out" 2>&1 &
svc() { # NAME VIP PORT BACKEND MTLS [FIELDS]: one service, its backend on node-b
	printf '{ "name": "%s", "vip": "%s", "port": %s, "mtls": "%s"%s,\n    "backends": [ { "address": "%s", "port": %s, "host": "node-b" } ] }' \
		"$1" "$2" "$3" "$5" "${6-}" "$4" "$3"
}
allow=", \"allow_from\": [ \"$REL/friend\" ]"
cat >"$T/policy.json" <<EOF
{ "hosts": { "node-b": "$B:15008", "node-a": "$A:15008" },
  "services": [
  $(svc g4 "$VIP" 8090 "$B" required "$allow"),
  $(svc p4 "$VIP" 8091 "$B" permissive),
  $(svc g6 "$VIP6" 8090 "$B6" required "$allow"),
  $(svc p6 "$VIP6" 8091 "$B6" permissive),
  { "name": "far", "vip": "$VIP", "port": 8095, "mtls": "required",
    "backends": [ { "address": "$A", "port": 8095, "host": "node-a" } ] } ] }
EOF
# a: far's backend, and a tunnel of its own (dmsc-l7 tunnel, no dmscd)
# that takes b's streams to it
STREAM=$BIN/tools/dmsc-stream
dmsc_net_exec a "$STREAM" server --listen "$A:8095" --max-seconds 300 >"$T/far.out" 2>&1 &
cat >"$T/a-policy.json" <<EOF
{ "services": [ { "name": "far", "vip": "$VIP", "port": 8095,
    "backends": [ { "address": "$A", "port": 8095 } ] } ] }
EOF
dmsc_net_exec a "$L7" tunnel --mtls-dir "$T/a" --listen "$A:15008" --policy "$T/a-policy.json" \
	--metrics-file "$T/a.prom" --ready-fd 3 3>"$T/a-tunnel.ready" 2>>"$T/a-tunnel.log" &

# start_dmscd: dmscd in b (nsenter: ip netns exec remounts /sys and hides
# the cgroup2 mount), installing or adopting the datapath on the mesh
# cgroup; waits for its first apply.
start_dmscd() {
	local before re='applied .* \(start\)|not applied|apply failed'
	before=$(t_nlines "$LOG" "$re")
	nsenter --net="/run/netns/${DMSC_NET_PREFIX}b" "$DMSCD" --cgroup "$MESH" \
		--policy "$T/policy.json" --mtls-dir "$T/b" --mtls-listen "$B:15008" --metrics off --tunnel-fastpath on \
		--debounce-ms 100 >>"$LOG" 2>&1 &
	DPID=$!
	t_wait_lines "$LOG" "$re" $((before + 1)) 300 && grep -qE 'applied .* \(start\)' "$LOG"
}
t_check "dmscd on b applies the policy (this host is node-b)" start_dmscd
t_check "b's backends are up" dmsc_wait_ready "$T/peer.out" 30
lap "setup"

# urls_from HOST CGROUP URL...: curl's exit code and HTTP code for each URL
# ("28:000 0:200 ..."), from HOST, in CGROUP unless it is "-"; one curl for
# all of them (a process start costs seconds in a TCG guest)
urls_from() {
	local host=$1 cg=$2 url run=(dmsc_net_exec "$1")
	local args=(-sS -g --connect-timeout 3 -m 30 -w '%{exitcode}:%{http_code} ')
	shift 2
	[[ $cg != - ]] && run=(dmsc_run_in_cgroup "$cg" dmsc_net_exec "$host")
	for url in "$@"; do args+=(-o /dev/null "$url"); done
	"${run[@]}" curl "${args[@]}" 2>/dev/null
}
plain() { # HOST ADDR PORT: the same for one URL, straight to ADDR:PORT
	local r
	r=$(urls_from "$1" - "http://$2:$3/")
	echo "${r% }"
}
# snap: the guard's counters of every service, read once (dmscctl stats)
declare -A REFUSED ADMITTED ACCESS
snap() {
	local n r a x
	while read -r n r a x; do
		REFUSED[$n]=$r ADMITTED[$n]=$a ACCESS[$n]=$x
	done < <("$CTL" stats -o json | jq -r '.services[] |
		"\(.name) \(.mtls_plain_refused) \(.mtls_plain_admitted) \(.refused_access)"')
}

U4=http://$B U6=http://[$B6] # b's backends: :8090 required, :8091 permissive
read -r a4 a4p a6 a6p <<<"$(urls_from a - "$U4:8090/" "$U4:8091/" "$U6:8090/" "$U6:8091/")"
read -r b4 b6 <<<"$(urls_from b - "$U4:8090/" "$U6:8090/")"
read -r s4 s4p s6 s6p <<<"$(urls_from b "$STRANGER" "$U4:8090/" "$U4:8091/" "$U6:8090/" "$U6:8091/")"
read -r f4 f6 <<<"$(urls_from b "$FRIEND" "$U4:8090/" "$U6:8090/")"
for f in 4 6; do
	addr=$B
	[[ $f == 6 ]] && addr=[$B6]
	r=a$f rp=a${f}p b=b$f s=s$f sp=s${f}p fr=f$f
	t_eq "IPv$f: a plain client on a straight to b's required backend $addr:8090: no answer (SYN dropped)" \
		"${!r}" "28:000"
	t_eq "IPv$f: a plain client on a to b's permissive backend $addr:8091: let in" "${!rp}" "0:200"
	t_eq "IPv$f: b itself to $addr:8090 (loopback: not another host's)" "${!b}" "0:200"
	t_eq "IPv$f: a workload of b outside allow_from straight to $addr:8090: refused (EPERM, connect$f)" \
		"${!s}" "7:000"
	t_eq "IPv$f: a workload of b in allow_from straight to $addr:8090" "${!fr}" "0:200"
	t_eq "IPv$f: a permissive backend is not checked around the VIP" "${!sp}" "0:200"
done
lap "both families"
snap
for f in 4 6; do
	t_check "IPv$f: the dropped SYN counted mtls_plain_refused (${REFUSED[g$f]:-none})" \
		test "${REFUSED[g$f]:-0}" -ge 1
	t_eq "IPv$f: the permissive one counted mtls_plain_admitted, none refused" \
		"${ADMITTED[p$f]:-none}:${REFUSED[p$f]:-none}" "1:0"
	t_eq "IPv$f: the direct connect outside allow_from counted refused_access" \
		"${ACCESS[g$f]:-none}" 1
done

# ---- b's tunnel under b's mesh cgroup (docs/design.md decision 76) -------
# dmscd runs outside the mesh: --tunnel-fastpath on runs its tunnel in MESH/dmsc-tunnel, so a
# workload of b reaches it on the same-host fast path; through it and a's
# tunnel to far's backend on a, every byte as sent.
b_tunnel_cg() { grep -qx "$(pgrep -P "$DPID" -f "dmsc-l7 tunnel" | head -n 1)" "$MESH/dmsc-tunnel/cgroup.procs"; }
t_check "b's tunnel runs in the mesh's dmsc-tunnel cgroup" t_wait 10 b_tunnel_cg
t_check "a's tunnel is up" dmsc_wait_ready "$T/a-tunnel.ready" 60
t_check "far's backend is up" dmsc_wait_ready "$T/far.out" 30
# far_streams N BYTES: N connections of a workload of b to far, BYTES each
# way; prints [ok, failed], and on a failure what the client saw and both
# tunnels' last words
far_streams() {
	local out
	out=$(dmsc_run_in_cgroup "$FRIEND" dmsc_net_exec b "$STREAM" client --connect "$VIP:8095" \
		--conns "$1" --bytes "$2" --back-bytes "$2" --seed 76 --max-seconds 120 2>&1)
	jq -c '[.ok, .failed]' <<<"$out" 2>/dev/null
	[[ $(jq -c '.failed' <<<"$out" 2>/dev/null) == 0 ]] && return
	{
		echo "# the client: $out"
		tail -n 8 "$T/a-tunnel.log" | sed 's/^/# a: /'
		grep 'tunnel' "$LOG" | tail -n 12 | sed 's/^/# b: /'
	} >&2
}
t_eq "a workload of b through b's tunnel and a's to far: 2 connections, 200 KB each way byte-exact" \
	"$(far_streams 2 200000)" "[2,0]"
# b's tunnel's TLS connection to a's is a direct one of b's mesh with no
# peer here: it leaves the sockhash at its first ACK (decision 88), before
# its handshake ends and the tunnel turns kTLS on where the kernel has it
# (a kTLS socket in a sockhash would hand its records to tcp_bpf)
direct=$("$CTL" stats -o json | jq -c '.fastpath.direct | {registered, paired, no_peer, released}')
t_eq "b's tunnel's connection to a found no peer and left the sockhash ($direct)" \
	"$(jq '.no_peer >= 1 and .released >= .no_peer' <<<"$direct" 2>/dev/null)" true
# the same, of that very socket: its cookie (ss -e: sk:HEX) is no key of
# the pinned sockhash (keys: the cookie, little-endian)
tls_cookie=$(nsenter --net="/run/netns/${DMSC_NET_PREFIX}b" ss -tnHe state established dst "$A:15008" |
	grep -o ' sk:[0-9a-f]*' | head -n 1)
tls_cookie=${tls_cookie# sk:}
in_hash=$(bpftool -j map dump pinned "$DMSC_PIN_DIR/maps/dmsc_fp_socks" 2>/dev/null |
	jq -r '.[] | .key | reverse | map(ltrimstr("0x")) | join("")' | sed 's/^0*//' | grep -cx "${tls_cookie:-none}")
t_eq "...that socket (cookie ${tls_cookie:-none}) is no key of the sockhash" "${tls_cookie:+ok}:$in_hash" "ok:0"
far_fp=$("$CTL" stats -o json | jq -c '.services[] | select(.name == "far") | .fastpath | [.paired, .redirected_msgs > 0]')
t_eq "...their connections to b's tunnel were fast-path pairs ($far_fp)" \
	"$(jq '.[0] >= 1 and .[1]' <<<"$far_fp" 2>/dev/null)" true
# Many streams at once, each faster than the other end reads: the tunnels'
# sockets fill, and each connection's frames keep coming while OpenSSL
# waits to write. With kTLS (the guests of the matrix have it) OpenSSL
# keeps a pointer into the tunnel's buffer across that wait: those bytes
# must stay put (decision 89; a buffer that moved sent other bytes, and
# the far end read a malformed frame).
t_eq "a workload of b through both tunnels: 8 connections, 2 MB each way byte-exact" "$(far_streams 8 2000000)" "[8,0]"
lap "the tunnel on the fast path"

if [[ -n ${DMSC_MATRIX:-} ]]; then
	t_summary
	exit $?
fi

# ---- the sweep of the guard's index (docs/design.md decision 74) ---------
MAPS=$DMSC_PIN_DIR/maps
# keys (dmsc_svc_key / dmsc_svc6_key: address and port in network order,
# protocol 6, a zero pad byte)
K4_G="c6 12 4a 02 1f 9a 06 00"     # 198.18.74.2:8090, g4's backend
K4_P="c6 12 4a 02 1f 9b 06 00"     # 198.18.74.2:8091, p4's
K4_STALE="c6 12 4a 63 1f 9a 06 00" # 198.18.74.99:8090, no backend's
K6_STALE="20 01 00 02 00 74 00 00 00 00 00 00 00 00 00 99 1f 9a 06 00" # [2001:2:74::99]:8090
index() { # every entry of both maps, "KEY -> ID" in hex bytes, sorted
	local m
	for m in dmsc_be_mtls dmsc_be_mtls6; do
		bpftool -j map dump pinned "$MAPS/$m"
	done | jq -r '.[] | "\(.key | map(ltrimstr("0x")) | join(" ")) -> \(.value | map(ltrimstr("0x")) | join(" "))"' |
		sort
}
index_value() { # KEY...: the id an entry of dmsc_be_mtls names, in hex bytes
	index | sed -n "s/^$* -> //p"
}
index >"$T/index.before"
t_eq "b's index holds its 4 guarded backends" "$(wc -l <"$T/index.before")" 4
V_P=$(index_value "$K4_P")
# stale: what a killed apply leaves (an entry no backend needs in each map;
# g4's backend's entry naming p4's backend, whose port differs: unguarded)
stale() {
	printf '%s\n' "map update pinned $MAPS/dmsc_be_mtls key hex $K4_STALE value hex $V_P" \
		"map update pinned $MAPS/dmsc_be_mtls6 key hex $K6_STALE value hex $V_P" \
		"map update pinned $MAPS/dmsc_be_mtls key hex $K4_G value hex $V_P" >"$T/stale.batch"
	bpftool batch file "$T/stale.batch" >/dev/null
}
swept() { t_nlines "$LOG" "dmsc_be_mtls, dmsc_be_mtls6: deleted 2 entries that no guarded backend needs, pointed 1 back"; }
swept_ge() { [[ $(swept) -ge $1 ]]; }

t_check "bpftool writes two stale entries and points g4's entry at p4's backend" stale
t_eq "with its entry naming another backend, g4's backend lets a plain client in" \
	"$(plain a "$B" 8090)" "0:200"
# a writer killed at its first write (the install record's mark): dmscd's
# next apply repairs, and with it puts the index right
{ DMSC_TEST_KILL_AFTER_WRITES=1 "$CTL" apply "$T/policy.json" >/dev/null 2>&1; } 2>/dev/null
t_eq "dmscctl apply killed at its first write" "$?" 137
kill -HUP "$DPID"
t_check "dmscd's next apply sweeps the index and says so" t_wait 30 swept_ge 1
t_eq "the index holds what it held before, and nothing else" "$(index)" "$(cat "$T/index.before")"
t_eq "the plain client's SYN to g4's backend is dropped again" "$(plain a "$B" 8090)" "28:000"
lap "sweep at an apply"

# dmscd restarted on the same maps (adopted): its first apply sweeps
t_check "the same entries written again" stale
dmsc_stop TERM "$DPID"
t_check "dmscd restarted adopts the maps and applies" start_dmscd
t_eq "its first apply swept the index and said so" "$(swept)" 2
t_eq "the index holds what it held before, and nothing else" "$(index)" "$(cat "$T/index.before")"
t_eq "the plain client's SYN to g4's backend is dropped" "$(plain a "$B" 8090)" "28:000"
t_eq "over IPv6 too" "$(plain a "[$B6]" 8090)" "28:000"
lap "sweep at a restart"

# The end: dmscd stopped, then its tunnel, which this dmscd adopted from the
# one before (decision 86): no child of it, it hears its dmscd go by the end
# of its update socket, at once, and so ends as an orphan whose metrics
# file no dmscd serves (it was left behind when the SIGTERM came before
# the tunnel's next tick)
dmsc_stop TERM "$DPID"
dmsc_helpers_stop "$T"
t_check "the adopted tunnel, stopped after its dmscd, removed its metrics file" \
	test ! -e "/run/dmsc/dmsc-tunnel.$DPID.prom"
DPID=
t_summary
