#!/usr/bin/env bash
# IPv6 and dual stack on the running kernel (docs/design.md decisions 12 and
# 27): a weighted split over an IPv6 VIP with curl -6, getpeername6, UDP
# over IPv6 with replies from the VIP (recvmsg6), a dual-stack socket
# (AF_INET6, IPV6_V6ONLY off) reaching an IPv4 service through ::ffff:VIP
# for TCP and UDP, a connection limit and allow_from over IPv6, the
# same-host fast path pairing IPv6 connections (and a dual-stack socket's
# IPv4 ones as IPv4), a byte limit on an IPv6 backend policed by TC for a
# remote client, passive health ejecting an IPv6 backend (and a
# dual-stack socket's IPv4 one) after its refused connects, and what must
# stay untouched; on the host, dmscd's tcp and http probes to IPv6
# backends (docs/design.md decision 40), and an http service reached by a
# dual-stack socket through ::ffff:VIP (handed to dmsc-l7 as IPv4).
#
# In the kernel matrix (DMSC_MATRIX set by tests/matrix/guest.sh) the suite
# ends after the kernel's checks: bracketed addresses in dmscctl show and
# dmscd's metrics are userspace, and dmscd's start (it loads and verifies
# every program again) costs minutes in an emulated guest. What costs in a
# guest is a process start: dmscctl stats is read once per step into a
# file (snap), and clients that need no socket option are curl, not Python;
# there the clients also make fewer connections and the fast path carries
# 1 MiB each way instead of 4 (the same checks). "# [N s]" lines say where
# the time goes.
#
# Addresses: hosts 198.18.60.0/24 and 2001:2:60::/64, IPv6 VIPs in
# 2001:2:61::/64 (no host has a route to it), the IPv4 VIP 198.19.60.10.
set -u
. "$(cd "$(dirname "$0")/../lib" && pwd)/kernel.sh"
DPID=
LOADPID=
L7PID=
suite_cleanup() { # dmscd and dmsc-l7, before the common cleanup (kernel.sh)
	dmsc_stop KILL "$DPID" "$L7PID" "$LOADPID"
}
dmsc_suite_begin ipv6 dip6$$
PY=/usr/bin/python3
PEER="$TOP/tests/tools/v6-peer.py"
STREAM=$BIN/tools/dmsc-stream
MiB=$((1 << 20))
# Sizes: the host's, or the matrix's (see above).
if [[ -n ${DMSC_MATRIX:-} ]]; then
	NU=40 NS=20 NP=15 FPM=1 NH=10
else
	NU=100 NS=50 NP=30 FPM=4 NH=20
fi
lap() { echo "# [$SECONDS s] $1"; }
command -v curl >/dev/null || { echo "skip - needs curl"; exit 77; }
[[ -x $PY ]] || { echo "skip - needs $PY"; exit 77; }
[[ -r /proc/net/if_inet6 ]] || { echo "skip - this kernel has no IPv6"; exit 77; }

VIP6=2001:2:61::10  # web6 (tcp) and dns6 (udp)
LIM6=2001:2:61::11  # lim6: a connection limit
BL6=2001:2:61::13   # bl6: a byte limit (TC polices its backend's traffic)
ACL6=2001:2:61::12  # acl6: allow_from
PV6=2001:2:61::15   # pv6: passive health; hp6, ht6: dmscd's probes
VIP4=198.19.60.10   # web4, dns4: reached by dual-stack sockets as ::ffff:VIP4

dmsc_net_hosts c=198.18.60.2/16 b1=198.18.60.11/16 b2=198.18.60.12/16 || exit 1
dmsc_net_addr6 c 2001:2:60::2/64 || exit 1
dmsc_net_addr6 b1 2001:2:60::11/64 || exit 1
dmsc_net_addr6 b2 2001:2:60::12/64 || exit 1
dmsc_cgroups MESH=mesh ALLOWED=mesh/allowed OUTSIDE=outside L7CG=mesh/dmsc-l7 || exit 1
REL=dmsc-test/$P/mesh # allow_from paths are relative to the cgroup2 mount

for b in b1 b2; do
	n=${b#b}
	dmsc_net_exec "$b" "$PY" "$PEER" serve --name "$b" --max-seconds 600 \
		--listen "[2001:2:60::1$n]:8080" --listen "198.18.60.1$n:8080" >"$T/$b.out" 2>&1 &
done
# Integrity servers in the mesh cgroup (both ends of a connection must be in
# it for the fast path): one on IPv6, one on IPv4 for dual-stack clients.
dmsc_run_in_cgroup "$MESH" dmsc_net_exec b1 "$STREAM" server --listen "[2001:2:60::11]:7000" \
	--max-seconds 600 >"$T/st6.out" 2>&1 &
dmsc_run_in_cgroup "$MESH" dmsc_net_exec b1 "$STREAM" server --listen 198.18.60.11:7000 \
	--max-seconds 600 >"$T/st4.out" 2>&1 &
# bl6's backend: a port of its own, since TC polices a byte-limited
# service's backend address and port whatever service the packet came by
# (st6's bytes leave the fast path on a kernel that charges the reader).
dmsc_net_exec b1 "$STREAM" server --listen "[2001:2:60::11]:7001" --max-seconds 600 \
	>"$T/tc6.out" 2>&1 &
lap "hosts made, backends starting"

policy() { # web6's weights, the cgroup under mesh that acl6u allows
	cat <<EOF
{ "services": [
  { "name": "web6", "vip": "$VIP6", "port": 80,
    "backends": [ { "address": "2001:2:60::11", "port": 8080, "weight": $1 },
                  { "address": "2001:2:60::12", "port": 8080, "weight": $2 } ] },
  { "name": "dns6", "vip": "$VIP6", "port": 53, "protocol": "udp",
    "backends": [ { "address": "2001:2:60::11", "port": 8080 },
                  { "address": "2001:2:60::12", "port": 8080 } ] },
  { "name": "aff6", "vip": "$VIP6", "port": 88, "affinity": "client",
    "backends": [ { "address": "2001:2:60::11", "port": 8080 },
                  { "address": "2001:2:60::12", "port": 8080 } ] },
  { "name": "lim6", "vip": "$LIM6", "port": 80,
    "rate_limit": { "connections_per_second": 1, "burst": 3 },
    "backends": [ { "address": "2001:2:60::11", "port": 8080 } ] },
  { "name": "acl6", "vip": "$ACL6", "port": 80, "allow_from": [ "$REL/allowed" ],
    "backends": [ { "address": "2001:2:60::12", "port": 8080 } ] },
  { "name": "acl6u", "vip": "$ACL6", "port": 53, "protocol": "udp", "allow_from": [ "$REL/$3" ],
    "backends": [ { "address": "2001:2:60::12", "port": 8080 } ] },
  { "name": "web4", "vip": "$VIP4", "port": 80,
    "backends": [ { "address": "198.18.60.11", "port": 8080 },
                  { "address": "198.18.60.12", "port": 8080 } ] },
  { "name": "dns4", "vip": "$VIP4", "port": 53, "protocol": "udp",
    "backends": [ { "address": "198.18.60.11", "port": 8080 },
                  { "address": "198.18.60.12", "port": 8080 } ] },
  { "name": "st6", "vip": "$VIP6", "port": 7000, "accelerate": "on",
    "backends": [ { "address": "2001:2:60::11", "port": 7000 } ] },
  { "name": "st4", "vip": "$VIP4", "port": 7000, "accelerate": "on",
    "backends": [ { "address": "198.18.60.11", "port": 7000 } ] },
  { "name": "bl6", "vip": "$BL6", "port": 7000,
    "rate_limit": { "bytes_per_second": 65536, "bytes_burst": 65536 },
    "backends": [ { "address": "2001:2:60::11", "port": 7001 } ] },
  { "name": "pv6", "vip": "$PV6", "port": 80, "health": { "passive": $PASSIVE },
    "backends": [ { "address": "2001:2:60::11", "port": 8080 },
                  { "address": "2001:2:60::12", "port": 8083 } ] },
  { "name": "pv4", "vip": "$VIP4", "port": 81, "health": { "passive": $PASSIVE },
    "backends": [ { "address": "198.18.60.11", "port": 8080 },
                  { "address": "198.18.60.12", "port": 8083 } ] }
] }
EOF
}
# Passive health: 3 refused connects in a row eject a backend for 10 min
# (nothing listens on b2's port 8083).
PASSIVE='{ "consecutive_failures": 3, "base_ejection_ms": 600000, "max_ejection_ms": 600000 }'
peer() { # CGROUP tcp|udp ARGS...: v6-peer.py in the client host
	local cg=$1
	shift
	dmsc_run_in_cgroup "$cg" dmsc_net_exec c "$PY" "$PEER" "$@"
}
declare -A S J
snap() { # dmscctl stats, read once into S[SERVICE.FIELD] and S[reasons.REASON]
	local k v
	"$CTL" stats -o json >"$T/stats.json"
	S=()
	while IFS=$'\t' read -r k v; do S[$k]=$v; done < <(jq -r '
		(.services[] | .name as $n | paths(scalars) as $p |
			"\($n).\($p | map(tostring) | join("."))\t\(getpath($p))"),
		(.reasons // {} | to_entries[] | "reasons.\(.key)\t\(.value)")' "$T/stats.json")
}
stat_of() { # SERVICE FIELD: from the last snap
	echo "${S[$1.$2]-}"
}
curl_vip() { # CGROUP COUNT URL [CURL-ARG...]: curl -6, one process, COUNT connections
	local cg=$1 n=$2 url=$3 urls=() i
	shift 3
	for ((i = 0; i < n; i++)); do urls+=("$url"); done
	dmsc_run_in_cgroup "$cg" dmsc_net_exec c curl -6 -g -s --max-time 60 "$@" "${urls[@]}"
}

# TC on b1's interface (install runs in b1's namespace): remote traffic to
# its byte-limited backend is policed there.
t_check "install, TC on b1's eth0" nsenter --net="/run/netns/${P}b1" "$CTL" install \
	--cgroup "$MESH" --interface eth0
policy 70 30 allowed >"$T/p.json"
t_check "apply IPv6 services" "$CTL" apply "$T/p.json"
lap "installed and applied"
# (the backends started before the install, so that their interpreters'
# start overlaps it)
for b in b1 b2 st6 st4 tc6; do
	dmsc_wait_ready "$T/$b.out" 120 || { t_fail "backend $b ready"; t_summary; exit 1; }
done
lap "backends ready"
# The client of the revocation check below starts now, for the same reason:
# a connected UDP socket in ALLOWED is answered once, then waits for
# $T/resume.
rm -f "$T/resume"
peer "$ALLOWED" udp --connected --to "[$ACL6]:53" --count 1 --per-socket 2 \
	--pause-file "$T/resume" --pause-seconds 1200 >"$T/revoke.json" 2>"$T/revoke.err" &
RPID=$!

# curl -6 over the VIP: one process, 200 URLs, each a new connection (the
# backends close after each answer).
curl_vip "$MESH" 200 "http://[$VIP6]:80/" >"$T/curl.out"
snap
lap "curl -6"
t_eq "curl -6: 200 requests to [$VIP6]:80 all answered" "$(grep -c '^b[12]$' "$T/curl.out")" 200
# 70/30 is 90 of 128 slots, 70.3%.
t_share "b1's share of 200 connections is its slot share" "$(grep -c '^b1$' "$T/curl.out")" 200 70.31
t_eq "stats count web6's 200 connections" "$(stat_of web6 connections)" 200

t_check "cgroup_skb counts web6's bytes over IPv6, to and from" \
	test "$(stat_of web6 bytes_to)" -gt 0 -a "$(stat_of web6 bytes_from)" -gt 0
# The mesh cgroup's clients of the checks below, in one Python process
# (each start costs seconds in an emulated guest): one JSON line per job.
mesh_jobs=(tcp6 udp6 udp6c dual dualu dualuc lim acl-no direct pv6 pv4d aff6)
peer "$MESH" batch >"$T/mesh.jsonl" <<EOF
tcp --to [$VIP6]:80 --count 20
udp --to [$VIP6]:53 --count $NU
udp --to [$VIP6]:53 --count $NS --connected
tcp --dual --to $VIP4:80 --count $NU
udp --dual --to $VIP4:53 --count $NS
udp --dual --connected --to $VIP4:53 --count $NS
tcp --to [$LIM6]:80 --count 12
tcp --to [$ACL6]:80 --count 5
tcp --to [2001:2:60::11]:8080 --count 5
tcp --to [$PV6]:80 --count 200 --after-errors 3:$((NP - 3))
tcp --dual --to $VIP4:81 --count 200 --after-errors 3:$((NP - 3))
tcp --to [$VIP6]:88 --count 20
EOF
# J[JOB.rp]: [replies, peer_is_target]; J[JOB.keys]: the backends that
# answered; J[JOB.refused]: [ECONNREFUSED, then (--after-errors) replies,
# b1's, errors]; J[JOB.eperm]:
# [replies, EPERM]; J[JOB.direct]: [replies, peer_is_target, b1's].
while IFS=$'\t' read -r k v; do J[$k]=$v; done < <(jq -rs --args '
	[., $ARGS.positional] as [$r, $n] | range(0; $n | length) as $i | $r[$i] as $o | $n[$i] as $j |
	"\($j).rp\t\([$o.replies, $o.peer_is_target] | tojson)",
	"\($j).keys\t\($o.backends | keys | tojson)",
	"\($j).refused\t\([$o.errors.ECONNREFUSED, $o.after.replies, $o.after.backends.b1, ($o.after.errors | length)] | tojson)",
	"\($j).eperm\t\([$o.replies, ($o.errors.EPERM // 0)] | tojson)",
	"\($j).direct\t\([$o.replies, $o.peer_is_target, $o.backends.b1] | tojson)"' \
	"${mesh_jobs[@]}" <"$T/mesh.jsonl")
snap
lap "the mesh's Python clients"
t_eq "TCP over IPv6: getpeername() shows the VIP (getpeername6)" \
	"${J[tcp6.rp]}" "[20,20]"

# affinity "client" (docs/design.md decision 97): connect6 too; 20
# connections at 50/50 all on one backend by chance: one time in 2^19
t_eq "affinity client over IPv6: 20 connections answered, all by one backend" \
	"$(jq -c '.[0]' <<<"${J[aff6.rp]}") $(jq length <<<"${J[aff6.keys]}")" "20 1"

t_eq "UDP over IPv6: every answer comes from the VIP (sendmsg6, recvmsg6)" \
	"${J[udp6.rp]}" "[$NU,$NU]"
t_eq "... and the datagrams went to both backends" \
	"${J[udp6.keys]}" '["b1","b2"]'
t_eq "connected UDP over IPv6: answered, getpeername() shows the VIP" \
	"${J[udp6c.rp]}" "[$NS,$NS]"

# Dual stack: an AF_INET6 socket with IPV6_V6ONLY off to ::ffff:VIP4 is an
# IPv4 connection that the IPv4 service must translate, answering
# getpeername() with ::ffff:VIP4.
t_eq "dual-stack TCP to ::ffff:$VIP4: answered, getpeername() is ::ffff:VIP" \
	"${J[dual.rp]}" "[$NU,$NU]"
t_eq "... split over both IPv4 backends" "${J[dual.keys]}" '["b1","b2"]'
t_eq "... counted on the IPv4 service" "$(stat_of web4 connections)" "$NU"
t_eq "dual-stack UDP to ::ffff:$VIP4: every answer comes from ::ffff:VIP" \
	"${J[dualu.rp]}" "[$NS,$NS]"
t_eq "dual-stack connected UDP: answered, getpeername() is ::ffff:VIP" \
	"${J[dualuc.rp]}" "[$NS,$NS]"

# Passive health (docs/design.md decisions 28 and 40): connect6's sockets
# are watched to the end of their connect as connect4's are, and so are a
# dual-stack socket's IPv4 ones; the third refusal ejects, connect6 and
# connect4 pass over the ejected backend. The client connects until it has
# seen 3 refusals (a random split picks the dead backend 3 times in 15
# connects only most of the time), then $((NP - 3)) more.
t_eq "passive health over IPv6: 3 refused connects eject [2001:2:60::12]:8083, the next $((NP - 3)) all answered by b1" \
	"${J[pv6.refused]}" "[3,$((NP - 3)),$((NP - 3)),0]"
t_eq "... dual-stack to ::ffff:$VIP4:81 too, on the IPv4 service" \
	"${J[pv4d.refused]}" "[3,$((NP - 3)),$((NP - 3)),0]"
t_eq "... the kernel counted both ejections" "${S[reasons.health_ejected]:-0}" 2
t_eq "... show services: pv6's dead backend ejected, bracketed" \
	"$("$CTL" show services -o json | jq -c '.services[] | select(.name == "pv6") | [.backends[] | [.address, .health.state]]')" \
	'[["[2001:2:60::11]:8080","in"],["[2001:2:60::12]:8083","ejected"]]'

# The same-host fast path (docs/design.md decision 34): 4 connections over
# the IPv6 VIP, 4 MiB (FPM) each way in writes of 1 B to 1 MiB, both ends in the
# mesh cgroup, byte-exact; a client end whose first write beats its server
# end's registration stays on the stack (no_peer), as for IPv4. "on": on a
# kernel that cannot read a reader's backlog, "auto" sends bulk writes to
# the stack.
fp_read() { # st6's and st4's fast path counters from the last snap, as st6_paired etc.
	local s
	for s in st6 st4; do
		eval "${s}_paired=\${S[$s.fastpath.paired]} ${s}_no_peer=\${S[$s.fastpath.no_peer]}"
		eval "${s}_red=\${S[$s.fastpath.redirected_bytes]} ${s}_fb=\${S[$s.fastpath.backlog_fallback]}"
	done
}
server_ok() { # FILE COUNT: server lines with every byte in order, up to EOF
	t_wait 60 bash -c "(( \$(grep -c '^{\"conn\"' '$1') >= $2 ))"
	grep '^{"conn"' "$1" | jq -s '[.[] | select(.first_bad == -1 and .eof and .got == .expected and .error == "")] | length'
}
# fp_stream WHAT TARGET CONNS SEED SERVER: CONNS connections of dmsc-stream
# from the mesh to TARGET, $FPM MiB each way, every one ok at the client
# and byte-exact at the server (its lines in $T/SERVER.out); the counters
# read after it (fp_read)
fp_stream() {
	local what=$1 target=$2 conns=$3 seed=$4 server=$5
	dmsc_run_in_cgroup "$MESH" dmsc_net_exec c "$STREAM" client --connect "$target" --conns "$conns" \
		--bytes "${FPM}M" --back-bytes "${FPM}M" --seed "$seed" --max-seconds 120 >"$T/fp-$server.json"
	snap
	fp_read
	t_eq "$what: $conns x $FPM MiB each way, every connection ok at the client ($(jq -r .errors "$T/fp-$server.json"))" \
		"$(jq -c '[.ok, .failed, .first_bad]' "$T/fp-$server.json")" "[$conns,0,-1]"
	t_eq "... the server got every byte in order" "$(server_ok "$T/$server.out" "$conns")" "$conns"
}
fp_stream "fast path over IPv6" "[$VIP6]:7000" 4 61 st6
t_eq "... each connection paired or its client wrote first (no_peer)" \
	"$((st6_paired >= 1 && st6_paired <= 4 && st6_no_peer <= 4 && st6_paired + st6_no_peer >= 4))" 1
# carried: all of it, or, where the kernel charges redirected bytes to the
# reader (Linux 6.18), bytes up to the reader's receive buffer and then the
# stack (docs/design.md decision 37, counted as backlog_fallback).
carried() { # REDIRECTED-BYTES BACKLOG-FALLBACKS MIN-MiB MAX-MiB: 1 or 0
	local r=$1 f=$2 lo=$(($3 * MiB)) hi=$(($4 * MiB))
	echo $(((r >= lo && r <= hi) || (r > 0 && r < lo && f > 0)))
}
t_eq "... the fast path carried the bytes ($st6_red B, backlog_fallback $st6_fb)" \
	"$(carried "$st6_red" "$st6_fb" "$FPM" $((8 * FPM + 1)))" 1
fp_stream "fast path, dual-stack socket to [::ffff:$VIP4]" "[::ffff:$VIP4]:7000" 2 62 st4
t_eq "... paired and redirected as IPv4, on the IPv4 service ($st4_red B)" \
	"$st4_paired:$(carried "$st4_red" "$st4_fb" "$FPM" 100000)" "2:1"
echo "# fast path: st6 paired $st6_paired, redirected $((st6_red / MiB)) MiB; st4 (dual stack) paired $st4_paired"

# TC polices IPv6 (docs/design.md decision 34): a client outside the mesh
# cgroup (remote to b1) writes 4 MiB straight to bl6's backend for at most
# 3 s; at 64 KiB/s most of it waits, and TC counts what it passed and
# dropped against bl6's interface bucket.
dmsc_run_in_cgroup "$OUTSIDE" dmsc_net_exec c "$STREAM" client --connect "[2001:2:60::11]:7001" \
	--bytes 4M --seed 63 --max-seconds 3 >"$T/tc6.json"
snap
lap "fast path and TC"
t_check "TC polices remote IPv6 traffic to a byte-limited backend (tc_bytes $(stat_of bl6 tc_bytes), tc_policed $(stat_of bl6 tc_policed))" \
	test "$(stat_of bl6 tc_bytes)" -gt 65536 -a "$(stat_of bl6 tc_policed)" -gt 0

# A limit over IPv6: burst 3 at 1 per second, 12 connects in a row. However
# slow the machine, fewer than 12 tokens come in; each refusal is EPERM at
# connect() and counted on the service.
IFS='[,]' read -r _ ok eperm _ <<<"${J[lim.eperm]}"
t_eq "limit over IPv6: every connect either passes or is refused with EPERM" "$((ok + eperm))" 12
t_range "... the burst passes, some are refused" "$ok" 3 11
t_eq "... refusals counted as refused_rate" "$(stat_of lim6 refused_rate)" "$eperm"

t_eq "allow_from over IPv6: a cgroup not listed gets EPERM" \
	"${J[acl-no.eperm]}" "[0,5]"
t_eq "... counted as refused_access" "$(stat_of acl6 refused_access)" 5
t_eq "... the listed cgroup connects, to its backend" \
	"$(curl_vip "$ALLOWED" 5 "http://[$ACL6]:80/" | grep -c '^b2$')" 5

# Revoked while connected: a connected UDP socket in ALLOWED is answered,
# allow_from then names another cgroup, its next send() fails (EPERM:
# cgroup_skb egress checks it again, as for IPv4).
t_wait 300 grep -qx paused "$T/revoke.err" || t_fail "the connected UDP client sent its first datagram"
policy 70 30 later >"$T/p2.json"
"$CTL" apply "$T/p2.json" >/dev/null || t_fail "apply acl6u allowing another cgroup"
touch "$T/resume"
wait "$RPID"
t_eq "connected UDP over IPv6: answered, then EPERM once allow_from dropped its cgroup" \
	"$(jq -c '[.replies, .errors.EPERM]' "$T/revoke.json")" "[1,1]"

t_eq "IPv6 to a backend directly is untouched" \
	"${J[direct.direct]}" "[5,5,5]"
curl_vip "$OUTSIDE" 3 "http://[$VIP6]:80/" -v >"$T/outside.out" 2>&1
t_eq "IPv6 from outside the mesh cgroup is not translated (ENETUNREACH)" \
	"$(grep -c '^b[12]$' "$T/outside.out"):$(grep -c 'Network is unreachable' "$T/outside.out")" "0:3"

policy 0 100 later >"$T/drain.json"
"$CTL" apply "$T/drain.json" >"$T/drain.out"
t_check "a weight change of an IPv6 service is one update" grep -q 'web6.*weight 70 -> 0' "$T/drain.out"
curl_vip "$MESH" 30 "http://[$VIP6]:80/" >"$T/drained.out"
t_eq "a drained IPv6 backend gets no new connection" \
	"$(grep -c '^b2$' "$T/drained.out"):$(grep -c '^b1$' "$T/drained.out")" "30:0"

# bl6's backend is in TC's IPv6 index while bl6 exists, and leaves it with
# bl6 (the apply drops the entries its service owned).
index6() { bpftool map dump pinned "$DMSC_PIN_DIR/maps/dmsc_be_index6" -j | jq length; }
t_eq "TC's IPv6 index holds bl6's backend" "$(index6)" 1
jq 'del(.services[] | select(.name == "bl6"))' "$T/drain.json" >"$T/nobl6.json"
"$CTL" apply "$T/nobl6.json" >/dev/null || t_fail "apply without bl6"
t_eq "... and not once bl6 is gone" "$(index6)" 0
"$CTL" apply "$T/drain.json" >/dev/null || t_fail "apply with bl6 again"
lap "limits, allow_from, drain"

# http over IPv6 on every kernel (docs/design.md decisions 48, 51, 62):
# dmsc-l7 (alone: dmscd's start costs minutes in a guest) runs in host n
# with a mesh process in c. connect6 hands a connection to web6h's IPv6
# VIP to the helper's [::1] listener of the client's namespace, named in
# that namespace's dmsc_l7_netns entry, which needs the namespace's
# cookie: SO_NETNS_COOKIE from Linux 5.14, before it a cgroup program of
# the helper's (a cgroup dmsc-l7-netns.PID in its own, or else beside the
# mesh cgroup: here in its own, a cgroup of the test's). On the host the
# helper is made to use the program (DMSC_L7_NETNS_COOKIE=probe), so that
# both ways are checked. Without a cookie connect6 balances at L4: b1
# would answer (web6h's only route sends all to b2) and the access log
# would not have the requests. A helper stopped removes its cgroup; on
# the host, one killed (SIGKILL) leaves it, empty, and the next one
# removes it.
jq '.services += [{ "name": "web6h", "vip": "'"$VIP6"'", "port": 82, "protocol": "http",
    "backends": [ { "address": "2001:2:60::11", "port": 8080, "weight": 99, "labels": { "v": "1" } },
                  { "address": "2001:2:60::12", "port": 8080, "weight": 1, "labels": { "v": "2" } } ],
    "routes": [ { "match": { "path_prefix": "/" }, "backends": { "v": "2" } } ] }]' \
	"$T/drain.json" >"$T/web6h.json"
"$CTL" apply "$T/web6h.json" >/dev/null || t_fail "apply an http service on [$VIP6]:82"
dmsc_net_host n 198.18.60.1/16 || t_fail "host n for dmsc-l7"
dmsc_net_addr6 n 2001:2:60::1/64 || t_fail "host n's IPv6 address"
# A mesh process in c, so that the helper opens its listeners there.
dmsc_run_in_cgroup "$MESH" dmsc_net_exec c sleep 600 &
SLEEPPID=$!
kmaj=$(uname -r | cut -d. -f1) kmin=$(uname -r | cut -d. -f2)
if [[ -z ${DMSC_MATRIX:-} ]]; then
	export DMSC_L7_NETNS_COOKIE=probe
	probe=1
elif ((kmaj < 5 || (kmaj == 5 && kmin < 14))); then
	probe=1
else
	probe=0
fi
in_n() { nsenter --net="/run/netns/${P}n" "$@"; }
# The helper runs in a cgroup of the test's (L7CG), so that the probe's
# cgroup it makes in its own is in the test's tree whatever cgroup the
# test runs in (exec keeps the pid: L7PID is dmsc-l7's); in the mesh, as
# dmscd --l7-fastpath on runs it (docs/design.md decision 99).
l7_start() { # N: dmsc-l7 in n, its output in $T/l7-N.{out,err}; L7PID
	dmsc_exec_in_cgroup "$L7CG" nsenter --net="/run/netns/${P}n" "$BIN/dmsc-l7" --listen 198.18.60.1:15001 --policy "$T/web6h.json" --workers 1 \
		--access-log "$T/access6.log" >"$T/l7-$1.out" 2>"$T/l7-$1.err" &
	L7PID=$!
	dmsc_wait_ready "$T/l7-$1.out" 60 || t_fail "dmsc-l7 ready"
}
served6() { # N: requests of web6h the access log has, all routed to b2
	[[ $(grep -c 'service=web6h .* status=200 backend=\[2001:2:60::12\]:8080' "$T/access6.log") -eq $1 ]]
}
rm -f "$T/access6.log"
l7_start 1
t_check "dmsc-l7 listens on [::1] in c's namespace" \
	t_wait 20 grep -q "and \[::1\]" "$T/l7-1.err"
probe_cg() { # N: the probe's cgroup that helper N names in its log
	grep -o 'cgroup/sock_create program on [^ ]*' "$T/l7-$1.err" | head -n 1 | cut -d' ' -f4
}
CGMNT=$(dmsc_cgroup2_mount)
if ((probe)); then
	cg1=$(probe_cg 1)
	t_check "... the cookies from a cgroup program on dmsc-l7-netns.$L7PID, not in the cgroup2 root" \
		bash -c "[[ -d '$cg1' && '$cg1' == */dmsc-l7-netns.$L7PID && \$(dirname '$cg1') != '$CGMNT' ]]"
	t_eq "... made in the helper's own cgroup (the test's)" "$(dirname "$cg1")" "$L7CG"
fi
snap
nh0=${S[reasons.l7_no_helper]:-0}
curl_vip "$MESH" "$NH" "http://[$VIP6]:82/" >"$T/l7v6a.out"
t_eq "curl -6 to [$VIP6]:82 (http) from c: $NH answered, all by b2 (the helper's route)" \
	"$(grep -c '^b2$' "$T/l7v6a.out")" "$NH"
t_check "... all $NH through dmsc-l7 (its access log)" t_wait 10 served6 "$NH"
dmsc_run_in_cgroup "$MESH" in_n curl -6 -g -s --max-time 60 "http://[$VIP6]:82/" "http://[$VIP6]:82/" \
	"http://[$VIP6]:82/" "http://[$VIP6]:82/" "http://[$VIP6]:82/" >"$T/l7v6own.out"
t_eq "a client in the helper's own namespace (n): 5 answered by b2" \
	"$(grep -c '^b2$' "$T/l7v6own.out")" 5
t_check "... all through dmsc-l7" t_wait 10 served6 $((NH + 5))
snap
t_eq "... none balanced at L4 (l7_no_helper unchanged)" "${S[reasons.l7_no_helper]:-0}" "$nh0"
cg=${cg1:-}
# (the sweep is userspace: on the host only, where a helper start is cheap)
if ((probe)) && [[ -z ${DMSC_MATRIX:-} ]]; then
	dmsc_stop KILL "$L7PID"
	t_check "a helper killed (SIGKILL) leaves its cgroup" test -d "$cg1"
	l7_start 2
	t_check "... and listens in c's namespace again" t_wait 20 grep -q "and \[::1\]" "$T/l7-2.err"
	cg=$(probe_cg 2)
	t_check "... the next helper removes it (and says so)" \
		bash -c "[[ ! -d '$cg1' ]] && grep -qF 'removed $cg1, left by a helper that is gone' '$T/l7-2.err'"
	t_check "... and makes its own" bash -c "[[ -d '$cg' && '$cg' == */dmsc-l7-netns.$L7PID ]]"
	curl_vip "$MESH" 5 "http://[$VIP6]:82/" >"$T/l7v6b.out"
	t_check "... and serves c's IPv6 clients (5 more in its access log)" \
		t_wait 10 served6 $((NH + 10))
fi
dmsc_stop TERM "$L7PID"
L7PID=
if ((probe)); then
	t_check "a helper stopped removes its cgroup" bash -c "[[ -n '$cg' && ! -d '$cg' ]]"
fi
unset DMSC_L7_NETNS_COOKIE
lap "http over IPv6"
if [[ -n ${DMSC_MATRIX:-} ]]; then
	dmsc_stop KILL "$SLEEPPID"
	t_summary
	exit
fi

# Bracketed IPv6 in dmscctl show (text and JSON) and in dmscd's metrics;
# dmscd adopts the datapath (its mirror reads dmsc_services6) and applies
# the same policy again without a write.
"$CTL" show services >"$T/show.txt"
t_check "show services: [$VIP6]:80/tcp and its backend [2001:2:60::12]:8080" \
	grep -qF -e "[$VIP6]:80/tcp" "$T/show.txt"
t_check "... backends bracketed" grep -qF "[2001:2:60::12]:8080" "$T/show.txt"
"$CTL" stats >"$T/stats.txt"
t_check "stats: [$VIP6]:80/tcp and its backends bracketed" bash -c \
	"grep -qF 'web6  [$VIP6]:80/tcp' '$T/stats.txt' && grep -qF -- '-> [2001:2:60::11]:8080' '$T/stats.txt'"
t_eq "stats -o json: the VIP and backends bracketed" \
	"$(jq -c '.services[] | select(.name == "web6") | [.vip, .backends[].address]' "$T/stats.json")" \
	"[\"[$VIP6]:80/tcp\",\"[2001:2:60::11]:8080\",\"[2001:2:60::12]:8080\"]"
t_eq "show services -o json: the VIP and backends bracketed" \
	"$("$CTL" show services -o json | jq -c '.services[] | select(.name == "dns6") | [.vip, .backends[].address]')" \
	"[\"[$VIP6]:53/udp\",\"[2001:2:60::11]:8080\",\"[2001:2:60::12]:8080\"]"
# dmscd runs in c's namespace (its probes go from there to the backends,
# outside the mesh cgroup), with two services of probes on IPv6 backends:
# hp6 (http GET /healthz) and ht6 (tcp), whose second backend, b2's port
# 8082, has nothing listening yet.
probed() { # NAME PORT TYPE: a service whose dmscd probes its two IPv6 backends
	cat <<EOF
{ "name": "$1", "vip": "$PV6", "port": $2,
  "health": { "active": { "type": "$3", "path": "/healthz", "interval_ms": 200, "timeout_ms": 150,
                          "unhealthy_threshold": 2, "healthy_threshold": 2 } },
  "backends": [ { "address": "2001:2:60::11", "port": 8080 },
                { "address": "2001:2:60::12", "port": 8082 } ] }
EOF
}
jq --argjson h "$(probed hp6 81 http)" --argjson t "$(probed ht6 82 tcp)" \
	'.services += [$h, ($t | del(.health.active.path))]' "$T/drain.json" >"$T/h6.json"
"$CTL" apply "$T/h6.json" >/dev/null || t_fail "apply hp6 and ht6"
in_c() { nsenter --net="/run/netns/${P}c" "$@"; }
in_c "$BIN/dmscd" --cgroup "$MESH" --policy "$T/h6.json" --metrics 127.0.0.1:0 >"$T/dmscd.log" 2>&1 &
DPID=$!
# dmscd loads and verifies every program first: minutes in a loaded TCG guest.
t_wait 300 grep -q '(start)' "$T/dmscd.log"
t_check "dmscd adopts the IPv6 services and has nothing to write" \
	grep -q '(start).* 0 map entries written' "$T/dmscd.log"
URL=$(grep -o 'http://[0-9.:]*/metrics' "$T/dmscd.log" | tail -n 1)
in_c curl -sS --max-time 30 "$URL" >"$T/metrics.txt"
snap
t_check "the metrics pass the strict text-format check" awk -f "$TOP/tests/lib/promcheck.awk" "$T/metrics.txt"
t_eq "metrics: web6's connections under its bracketed VIP" \
	"$(awk -v k="dmsc_service_connections_total{service=\"web6\",vip=\"[$VIP6]:80/tcp\"}" '$1 == k { print $2 }' "$T/metrics.txt")" \
	"$(stat_of web6 connections)"
t_check "metrics: an IPv6 backend bracketed" \
	grep -qF "backend=\"[2001:2:60::12]:8080\"}" "$T/metrics.txt"

# dmscd's probes to IPv6 backends (docs/design.md decision 40).
be() { # SERVICE INDEX: a backend's slots and health state, from show services
	"$CTL" show services -o json |
		jq -r ".services[] | select(.name == \"$1\") | .backends[$2] | \"\(.slots) \(.health.state)\""
}
export CTL
export -f be
for s in hp6:http ht6:tcp; do
	IFS=: read -r s kind <<<"$s"
	t_check "$s: dmscd's $kind probes take [2001:2:60::12]:8082 out (probe_failed, no slot)" \
		t_wait 30 bash -c "[[ \$(be $s 1) == '0 probe_failed' && \$(be $s 0) == '128 in' ]]"
	t_check "... dmscd logs it, bracketed" t_wait 10 \
		grep -q "health: $s \[2001:2:60::12\]:8082 out: .*probes failed in a row" "$T/dmscd.log"
done
dmsc_net_exec b2 "$PY" "$PEER" serve --name b2h --max-seconds 600 --listen "[2001:2:60::12]:8082" \
	>"$T/b2h.out" 2>&1 &
dmsc_wait_ready "$T/b2h.out" 20 || t_fail "b2's port 8082 ready"
for s in hp6 ht6; do
	t_check "$s: once it answers, back in the slot table" \
		t_wait 30 bash -c "[[ \$(be $s 1) == '64 in' ]]"
done
t_check "dmscd logs the return, bracketed" \
	grep -q "health: hp6 \[2001:2:60::12\]:8082 back in" "$T/dmscd.log"
in_c curl -sS --max-time 30 "$URL" >"$T/metrics2.txt"
t_check "metrics: the IPv6 backend's health, bracketed" \
	grep -qF "dmsc_backend_health{service=\"hp6\",vip=\"[$PV6]:81/tcp\",backend=\"[2001:2:60::12]:8082\",state=\"in\"} 1" "$T/metrics2.txt"

# An http service reached by dual-stack sockets (curl to [::ffff:VIP4], an
# AF_INET6 socket with IPV6_V6ONLY off): connect6 hands the IPv4
# connection to dmsc-l7 as connect4 would (its listener's address as
# ::ffff:), the helper routes it by header and weight, getpeername()
# answers ::ffff:VIP4.
dmsc_stop TERM "$DPID" # its policy file does not have web4h
DPID=
jq '.services += [{ "name": "web4h", "vip": "'"$VIP4"'", "port": 82, "protocol": "http",
    "backends": [ { "address": "198.18.60.11", "port": 8080, "weight": 70, "labels": { "v": "1" } },
                  { "address": "198.18.60.12", "port": 8080, "weight": 30, "labels": { "v": "2" } } ],
    "routes": [ { "match": { "path_prefix": "/", "headers": { "x-canary": "yes" } },
                  "backends": { "v": "2" } } ] },
  { "name": "web6h", "vip": "'"$VIP6"'", "port": 82, "protocol": "http",
    "backends": [ { "address": "2001:2:60::11", "port": 8080, "weight": 70, "labels": { "v": "1" } },
                  { "address": "2001:2:60::12", "port": 8080, "weight": 30, "labels": { "v": "2" } } ],
    "routes": [ { "match": { "path_prefix": "/", "headers": { "x-canary": "yes" } },
                  "backends": { "v": "2" } } ] },
  { "name": "web6h2", "vip": "'"$VIP6"'", "port": 83, "protocol": "http",
    "backends": [ { "address": "2001:2:60::12", "port": 8443 } ] }]' "$T/h6.json" >"$T/l7.json"
t_check "apply http services on $VIP4:82 and [$VIP6]:82, 83" "$CTL" apply "$T/l7.json"
# web6h2's backend: h2c (nghttpd) on b2's IPv6 address
mkdir -p "$T/www-h2" && echo h2b2 >"$T/www-h2/id"
dmsc_net_exec b2 nghttpd --no-tls -d "$T/www-h2" --address 2001:2:60::12 8443 >"$T/h2.out" 2>&1 &
# (n and the mesh process in c, which makes the helper open its listeners
# there, are the previous part's)
# nsenter, not ip netns exec, which mounts a /sys without the cgroup2
# mount the helper looks for the mesh's namespaces under.
nsenter --net="/run/netns/${P}n" "$BIN/dmsc-l7" --listen 198.18.60.1:15001 --policy "$T/l7.json" --workers 1 \
	--access-log "$T/access.log" >"$T/l7.out" 2>"$T/l7.err" &
L7PID=$!
dmsc_wait_ready "$T/l7.out" 20 || t_fail "dmsc-l7 ready"
curl_vip "$MESH" 100 "http://[::ffff:$VIP4]:82/" >"$T/l7dual.out"
t_eq "dual-stack curl to [::ffff:$VIP4]:82 (http): 100 answered through dmsc-l7" \
	"$(grep -c '^b[12]$' "$T/l7dual.out")" 100
t_share "... b1's share is its slot share of 70/30" "$(grep -c '^b1$' "$T/l7dual.out")" 100 70.31
t_eq "... the header route sends all 20 to b2" \
	"$(curl_vip "$MESH" 20 "http://[::ffff:$VIP4]:82/" -H 'x-canary: yes' | grep -c '^b2$')" 20
peer "$MESH" tcp --dual --to "$VIP4:82" --count 10 >"$T/l7peer.json"
t_eq "... getpeername() is ::ffff:VIP (a dual-stack socket, v6-peer)" \
	"$(jq -c '[.replies, .peer_is_target]' "$T/l7peer.json")" "[10,10]"
snap
t_eq "... counted on web4h: 130 connections handed over" "$(stat_of web4h connections)" 130
t_check "... the helper served them all (access log: 130 requests of web4h with status 200)" \
	t_wait 10 bash -c "(( \$(grep -c 'service=web4h .* status=200' '$T/access.log') == 130 ))"

# http over IPv6 (docs/design.md decision 48): curl -6 to [VIP6]:82 is
# handed by connect6 to the helper's [::1] listener in c's namespace; the
# helper splits by weight, routes by header and connects to the IPv6
# backends; its access log prints them bracketed.
t_check "the helper listens on [::1] in c's namespace" \
	t_wait 10 grep -q "and \[::1\]" "$T/l7.err" "$T/l7.out"
curl_vip "$MESH" 100 "http://[$VIP6]:82/" >"$T/l7v6.out"
t_eq "curl -6 to [$VIP6]:82 (http): 100 answered" "$(grep -c '^b[12]$' "$T/l7v6.out")" 100
t_check "... all 100 through dmsc-l7 (access log, IPv6 backends bracketed)" \
	t_wait 10 bash -c "(( \$(grep -c 'service=web6h .* status=200 backend=\[2001:2:60::1[12]\]:8080' '$T/access.log') == 100 ))"
t_share "... b1's share by the access log is its slot share of 70/30" \
	"$(grep -c 'service=web6h .* backend=\[2001:2:60::11\]:8080' "$T/access.log")" 100 70.31
t_eq "... the header route sends all 20 to b2" \
	"$(curl_vip "$MESH" 20 "http://[$VIP6]:82/" -H 'x-canary: yes' | grep -c '^b2$')" 20
peer "$MESH" tcp --to "[$VIP6]:82" --count 10 >"$T/l7peer6.json"
t_eq "... getpeername() is the IPv6 VIP (v6-peer)" \
	"$(jq -c '[.replies, .peer_is_target]' "$T/l7peer6.json")" "[10,10]"
h2up() { dmsc_net_exec b2 ss -Htln "sport = :8443" | grep -q .; }
t_check "nghttpd on [2001:2:60::12]:8443" t_wait 10 h2up
t_eq "... HTTP/2 (prior knowledge) through [$VIP6]:83 to the IPv6 h2c backend" \
	"$(curl_vip "$MESH" 1 "http://[$VIP6]:83/id" --http2-prior-knowledge -w ' %{http_version}')" \
	"h2b2
 2"
t_check "... the helper served it (access log: a web6h2 stream, proto=h2, status 200)" \
	t_wait 10 grep -q "service=web6h2 route=-1 proto=h2 status=200" "$T/access.log"
snap
t_eq "... counted on web6h: 130 connections handed over" "$(stat_of web6h connections)" 130
dmsc_stop TERM "$L7PID"
L7PID=

# http over IPv6 in the helper's own namespace (docs/design.md decision
# 51): n plays the host of a plain systemd deployment, dmscd and its
# helper run there and so do the clients. The helper listens on [::1] in
# n too and names it in n's dmsc_l7_netns entry; own6's only route sends
# everything to b2 (weight 1 of 100), so an answer from b1 is a connection
# balanced at L4. A route added in front (a change of the routes, which a
# running helper cannot take in place: decision 85) makes dmscd replace
# its helper while a client opens connection after connection: the new
# helper binds [::1] beside the old one, which takes what its queue holds
# and closes; no connection fails.
own6() { # [ROUTE,]: own6's policy, written whole (dmscd watches the file)
	cat >"$T/own.tmp" <<EOF
{ "services": [ { "name": "own6", "vip": "$VIP6", "port": 84, "protocol": "http",
    "backends": [ { "address": "2001:2:60::11", "port": 8080, "weight": 99, "labels": { "v": "1" } },
                  { "address": "2001:2:60::12", "port": 8080, "weight": 1, "labels": { "v": "2" } } ],
    "routes": [ $1 { "match": { "path_prefix": "/" }, "backends": { "v": "2" }, "timeout_ms": 5000 } ] } ] }
EOF
	mv "$T/own.tmp" "$T/own.json"
}
own_pid() { pgrep -f -- "--metrics-file /run/dmsc/dmsc-l7.$DPID.prom" | head -n 1; }
own6 ""
nsenter --net="/run/netns/${P}n" "$BIN/dmscd" --cgroup "$MESH" --policy "$T/own.json" \
	--l7-listen 198.18.60.1:15001 --metrics off --debounce-ms 100 >"$T/dmscd-own.log" 2>&1 &
DPID=$!
if t_wait 30 grep -q "listening in the helper's own network namespace on \[::1\]:15001" "$T/dmscd-own.log"; then
	t_ok "dmscd's helper listens on [::1] in its own namespace"
else
	t_fail "dmscd's helper listens on [::1] in its own namespace"
	tail -n 15 "$T/dmscd-own.log"
fi
t_check "... and says ready" t_wait 10 test -f "/run/dmsc/dmsc-l7.$DPID.prom"
dmsc_run_in_cgroup "$MESH" in_n "$PY" "$PEER" tcp --to "[$VIP6]:84" --count 20 >"$T/own1.json"
t_eq "a client in the helper's namespace: [$VIP6]:84 routed by the helper (20 to b2), getpeername() the VIP" \
	"$(jq -c '[.backends, .peer_is_target, .errors]' "$T/own1.json")" '[{"b2":20},20,{}]'
old=$(own_pid)
n0=$(grep -c 'replaced by' "$T/dmscd-own.log")
rm -f "$T/own.stop"
dmsc_run_in_cgroup "$MESH" in_n "$PY" "$PEER" tcp --to "[$VIP6]:84" --count 20000 \
	--until-file "$T/own.stop" >"$T/own2.json" &
LOADPID=$!
# the switch in the middle of the load: wait until the old helper has
# served 20 of its requests (its metrics file, rewritten every second)
own_reqs() { awk '/^dmsc_l7_requests_total\{/ { s += $NF } END { print s + 0 }' \
	"/run/dmsc/dmsc-l7.$DPID.prom" 2>/dev/null; }
own_reqs_over() { [[ $(own_reqs) -ge $1 ]]; }
r0=$(own_reqs)
t_check "... the load goes through the old helper" t_wait 30 own_reqs_over $((r0 + 20))
own6 '{ "match": { "path_prefix": "/admin" }, "backends": { "v": "2" } },'
t_check "a route added: dmscd replaces its helper" \
	t_wait 20 bash -c "[[ \$(grep -c 'replaced by' '$T/dmscd-own.log') -gt $n0 ]]"
t_check "... the old helper is gone" t_wait 20 bash -c "! kill -0 '${old:-0}' 2>/dev/null"
t_check "... while the client was still connecting" kill -0 "$LOADPID"
touch "$T/own.stop"
wait "$LOADPID"
t_eq "... not one of its connections failed, all routed by a helper (b2)" \
	"$(jq -c '[.errors, (.backends | keys), .replies > 20, .replies == .peer_is_target]' "$T/own2.json")" \
	'[{},["b2"],true,true]'
dmsc_run_in_cgroup "$MESH" in_n "$PY" "$PEER" tcp --to "[$VIP6]:84" --count 20 >"$T/own3.json"
t_eq "... and the new helper routes them (20 to b2)" \
	"$(jq -c '[.backends, .errors]' "$T/own3.json")" '[{"b2":20},{}]'
dmsc_stop TERM "$DPID"
DPID=
dmsc_stop KILL "$SLEEPPID"

t_summary
