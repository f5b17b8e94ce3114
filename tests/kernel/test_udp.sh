#!/usr/bin/env bash
# UDP services on the running kernel: unconnected sendto() translated per
# socket and sticky, replies shown as coming from the VIP (recvmsg4),
# connected UDP (connect4 + getpeername4), and what must stay untouched.
set -u
. "$(cd "$(dirname "$0")/../lib" && pwd)/kernel.sh"
dmsc_suite_begin udp dudp$$
UDP=$BIN/tools/dmsc-udp
VIP=198.19.0.30
dmsc_net_hosts c=198.18.0.2/16 b1=198.18.1.2/16 b2=198.18.1.3/16 || exit 1
dmsc_cgroups MESH=mesh OUTSIDE=outside || exit 1
dmsc_net_exec b1 "$UDP" serve --listen 198.18.1.2:5353 --name u1 --max-seconds 3600 >"$T/u1.out" 2>&1 &
dmsc_net_exec b2 "$UDP" serve --listen 198.18.1.3:5353 --name u2 --max-seconds 3600 >"$T/u2.out" 2>&1 &
dmsc_backends_ready "$T/u1.out" "$T/u2.out"

policy() {
	printf '{ "services": [ { "name": "dns", "vip": "%s", "port": 53, "protocol": "udp",
  "backends": [ { "address": "198.18.1.2", "port": 5353, "weight": %s },
                { "address": "198.18.1.3", "port": 5353, "weight": %s } ] } ] }\n' "$VIP" "$1" "$2"
}
send() {
	local cg=$1
	shift
	# 30 s for an answer: a loaded machine or a TCG guest is slow; a datagram
	# refused or unreachable fails at sendto(), so no passing run waits.
	dmsc_run_in_cgroup "$cg" dmsc_net_exec c "$UDP" send --json --timeout-ms 30000 "$@"
}

t_check "install" "$CTL" install --cgroup "$MESH"
policy 80 20 >"$T/p.json"
t_check "apply a UDP service" "$CTL" apply "$T/p.json"

send "$MESH" --to "$VIP:53" --sockets 2000 --per-socket 1 >"$T/split.json"
t_eq "2000 datagrams to the VIP are all answered" "$(jq .replies "$T/split.json")" 2000
# (centred on u1's slot share, 102 of 128 = 79.69%)
t_share "u1's share of 2000 sockets is its slot share" "$(jq '.backends.u1 // 0' "$T/split.json")" 2000 79.69
t_eq "every answer shows the VIP as its source (recvmsg4)" \
	"$(jq .source_is_target "$T/split.json")" 2000
t_eq "stats count one flow per socket" \
	"$("$CTL" stats -o json | jq '.services[0].connections')" 2000

send "$MESH" --to "$VIP:53" --sockets 50 --per-socket 20 >"$T/sticky.json"
t_eq "a socket's datagrams stay with one backend" \
	"$(jq -c '[.replies, .sticky_sockets]' "$T/sticky.json")" "[1000,50]"

send "$MESH" --to "$VIP:53" --sockets 400 --per-socket 2 --connected >"$T/conn.json"
t_eq "connected UDP: every answer arrives, getpeername() shows the VIP" \
	"$(jq -c '[.replies, .source_is_target]' "$T/conn.json")" "[800,800]"
t_share "connected UDP splits too (u1's share)" "$(jq '.backends.u1 // 0' "$T/conn.json")" 800 79.69

policy 0 100 >"$T/drain.json"
"$CTL" apply "$T/drain.json" >/dev/null
send "$MESH" --to "$VIP:53" --sockets 200 --per-socket 1 >"$T/drained.json"
t_eq "a drained UDP backend gets no new flow" \
	"$(jq -c '[.replies, (.backends.u1 // 0)]' "$T/drained.json")" "[200,0]"

send "$MESH" --to 198.18.1.2:5353 --sockets 20 --per-socket 1 >"$T/direct.json"
t_eq "UDP to a backend directly is untouched" \
	"$(jq -c '[.replies, .source_is_target, .backends.u1]' "$T/direct.json")" "[20,20,20]"
send "$OUTSIDE" --to "$VIP:53" --sockets 10 --per-socket 1 >"$T/outside.json"
t_eq "UDP from outside the mesh cgroup is not translated (ENETUNREACH)" \
	"$(jq -c '[.replies, .errors.ENETUNREACH]' "$T/outside.json")" "[0,10]"

# Revoking access stops the next datagram (issue 10, item 11). A socket in
# ALLOWED sends once to an allow_from service (and so has its backend
# remembered), the policy then drops ALLOWED from allow_from while the slot
# table stays the same: its next sendto() must be refused (EPERM), and the
# backend must not see it. The same for a connected socket: connect() ran
# once, before the change, and its next send() must be refused as well.
dmsc_cgroups ALLOWED=mesh/allowed LATER=mesh/later || exit 1
REL=dmsc-test/$P/mesh # allow_from paths are relative to the cgroup2 mount
dmsc_net_host b3 198.18.1.4/16 || exit 1
dmsc_net_exec b3 "$UDP" serve --listen 198.18.1.4:5353 --name u3 --max-seconds 3600 --log >"$T/u3.out" 2>&1 &
dmsc_wait_ready "$T/u3.out" 10 || t_fail "backend u3 ready"
acl_policy() {
	printf '{ "services": [ { "name": "acl", "vip": "198.19.0.31", "port": 53, "protocol": "udp",
  "allow_from": [ "%s" ], "backends": [ { "address": "198.18.1.4", "port": 5353 } ] } ] }\n' "$1"
}
# revoke NAME [--connected]: one socket in ALLOWED sends, access is revoked
# while it waits, then it sends again; its report is in $T/NAME.json.
revoke() {
	local name=$1 pid
	shift
	acl_policy "$REL/allowed" >"$T/acl.json"
	"$CTL" apply "$T/acl.json" >/dev/null || t_fail "$name: apply allow_from allowed"
	rm -f "$T/$name.resume"
	send "$ALLOWED" --to 198.19.0.31:53 --sockets 1 --per-socket 2 --pause-after 1 \
		--resume-file "$T/$name.resume" "$@" >"$T/$name.json" 2>"$T/$name.err" &
	pid=$!
	t_wait 30 grep -qx paused "$T/$name.err" || t_fail "$name: the client sent its first datagram"
	acl_policy "$REL/later" >"$T/acl.json"
	"$CTL" apply "$T/acl.json" >/dev/null || t_fail "$name: apply allow_from later"
	touch "$T/$name.resume"
	wait "$pid"
}
from_c() { grep -c '^from 198\.18\.0\.2:' "$T/u3.out"; }
# marker: a datagram straight to u3 (no VIP, untouched), answered once u3
# has read everything that reached it before: then u3's log is complete.
marker() {
	dmsc_net_exec c "$UDP" send --json --timeout-ms 30000 --to 198.18.1.4:5353 \
		--sockets 1 --per-socket 1 | jq .replies
}
revoke unconnected
t_eq "unconnected UDP: answered before allow_from dropped its cgroup, EPERM at the next sendto()" \
	"$(jq -c '[.replies, .send_errors, .errors.EPERM]' "$T/unconnected.json")" "[1,1,1]"
t_eq "unconnected UDP: the refused datagram never reached the backend" \
	"$(marker) $(from_c)" "1 2"
revoke connected --connected
t_eq "connected UDP: answered before allow_from dropped its cgroup, EPERM at the next send()" \
	"$(jq -c '[.replies, .send_errors, .errors.EPERM]' "$T/connected.json")" "[1,1,1]"
t_eq "connected UDP: the refused datagram never reached the backend" \
	"$(marker) $(from_c)" "1 4"
t_eq "stats count the refusals as refused_access" \
	"$("$CTL" stats -o json | jq '.services[] | select(.name == "acl") | .refused_access')" 2

t_check "uninstall" "$CTL" uninstall
t_summary
