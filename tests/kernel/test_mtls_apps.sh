#!/usr/bin/env bash
# test_mtls_apps.sh: real applications between two hosts through the mutual
# TLS tunnel (docs/mtls.md), driven by their own clients: a Redis server and
# a PostgreSQL server on host b, in b's mesh cgroup, behind VIPs of
# `"mtls": "required"` services; redis-benchmark, redis-cli, pgbench and
# psql on host a, in a's. Each host (a network namespace on one bridge)
# runs its own dmscd with its own datapath, pins and certificate from one
# mesh CA: connect4 on a hands each connection to a's tunnel, which carries
# it as a stream of its TLS connection to b's tunnel, which checks a's
# identity against allow_from and delivers it. What the applications see
# must be what they see without dmsc: no error, each request carried once
# (20,000 INCRs make 20,000), every byte as sent (a 3 MiB value, an 8 MB
# query result against the one read on b itself), transactions consistent.
# test_apps.sh runs the same clients on one host (the fast path).
#
# Addresses: hosts 198.18.75.1-2/16, VIPs 198.19.75.1-3 (routed nowhere).
#
# Prints "ok - ..." / "not ok - ..." per check, then "N passed, M failed".
set -u
. "$(cd "$(dirname "$0")/../lib" && pwd)/kernel.sh"
. "$(cd "$(dirname "$0")/../lib" && pwd)/apps.sh"
apps_need
dmsc_suite_begin mtls-apps dma$$
A=198.18.75.1 B=198.18.75.2
CACHE_VIP=198.19.75.1 DB_VIP=198.19.75.2 LOAD_VIP=198.19.75.3
dmsc_net_hosts a=$A/16 b=$B/16 || exit 1
dmsc_cgroups MESH_A=a MESH_B=b || exit 1
mkdir "$MESH_B/infra" "$MESH_A/apps" "$MESH_A/stranger"
PIN_A=$T/bpffs/dmsc-a
PGD=$(mktemp -d /tmp/dmsc-mtls-apps-pg.XXXXXX)
suite_cleanup() {
	dmsc_stop TERM "${APID:-}" "${BPID:-}"
	dmsc_helpers_stop "--pin-dir $PIN_A "
	dmsc_helpers_stop "--pin-dir $DMSC_PIN_DIR "
	# (b's datapath is the suite's own, uninstalled by kernel.sh's cleanup)
	DMSC_PIN_DIR=$PIN_A "$CTL" uninstall >/dev/null 2>&1
	[[ -n ${PGD:-} && $PGD == /tmp/dmsc-mtls-apps-pg.* ]] && rm -rf "$PGD"
}
chown postgres: "$PGD"
lap() { echo "# [$SECONDS s] $1"; }

"$CTL" ca init "$T/ca" --trust-domain apps.test >/dev/null &&
	"$CTL" ca issue "$T/ca" --host node-a --out "$T/a" >/dev/null &&
	"$CTL" ca issue "$T/ca" --host node-b --out "$T/b" >/dev/null
t_eq "a mesh CA, node-a's and node-b's certificates (dmscctl ca)" "$?" 0
t_check "install host a's datapath on a's mesh cgroup" \
	env DMSC_PIN_DIR="$PIN_A" "$CTL" install --cgroup "$MESH_A"
t_check "install host b's datapath on b's mesh cgroup" "$CTL" install --cgroup "$MESH_B"

# One policy for both hosts but for allow_from, which b checks: a's
# cgroup "apps", where the clients run, is in it; "stranger", beside it in
# a's mesh cgroup, is not.
svc() { # NAME VIP PORT ALLOW_FROM_FIELD
	printf '{ "name": "%s", "vip": "%s", "port": %s %s,\n      "backends": [ { "address": "%s", "port": %s, "host": "node-b" } ] }' \
		"$1" "$2" "$3" "$4" "$B" "$3"
}
policy() { # ALLOW_FROM_FIELD
	printf '{ "mtls": "required",\n  "hosts": { "node-a": "%s:15008", "node-b": "%s:15008" },\n  "services": [\n    %s,\n    %s,\n    %s ] }\n' \
		"$A" "$B" "$(svc cache "$CACHE_VIP" 6379 "$1")" "$(svc db "$DB_VIP" 5432 "$1")" \
		"$(svc db-load "$LOAD_VIP" 5432 "$1")"
}
REL_A=${MESH_A#"$(dmsc_cgroup2_mount)"/}
policy ", \"allow_from\": [ \"$REL_A/apps\" ]" >"$T/policy-b.json"
policy "" >"$T/policy-a.json"

# The servers, in b's mesh cgroup: the guard of a required service drops a
# plain connection from another host to them; what b's tunnel delivers gets
# in.
apps_servers "$MESH_B" b "$B" b "$B" "$PGD"

# start_dmscd HOST PIN_DIR POLICY [CGROUP]: dmscd in HOST's namespace with
# HOST's certificate, its tunnel on HOST's address; its pid on stdout.
# (nsenter, not ip netns exec, which remounts /sys and hides the cgroup2
# mount the tunnel resolves identities in.) b's runs in b's mesh cgroup,
# so that its tunnel's deliveries are b's own mesh traffic.
start_dmscd() {
	local in_cg=() addr
	[[ -n ${4-} ]] && in_cg=(dmsc_run_in_cgroup "$4")
	addr=$([[ $1 == a ]] && echo "$A" || echo "$B")
	# shellcheck disable=SC2016 # expanded by the inner shell
	"${in_cg[@]}" nsenter --net="/run/netns/${P}$1" bash -c 'echo $$ >"$0"; exec "$@"' \
		"$T/dmscd-$1.pid" "$DMSCD" --pin-dir "$2" --policy "$3" --mtls-dir "$T/$1" \
		--mtls-listen "$addr:15008" --metrics off >>"$T/dmscd-$1.log" 2>&1 &
	t_wait 5 test -s "$T/dmscd-$1.pid" && cat "$T/dmscd-$1.pid"
}
BPID=$(start_dmscd b "$DMSC_PIN_DIR" "$T/policy-b.json" "$MESH_B/infra")
APID=$(start_dmscd a "$PIN_A" "$T/policy-a.json")
b_tunnel_up() { ip netns exec "${P}b" ss -Htln '( sport = :15008 )' | grep -q .; }
t_check "b's tunnel listens" t_wait 30 b_tunnel_up
t_check "a's tunnel takes the kernel's handoffs" \
	t_wait 30 grep -q "takes the kernel's handoffs" "$T/dmscd-a.log"

lap "two hosts, their dmscd and tunnels, Redis and PostgreSQL on b"

# in_a CMD...: CMD on host a, in its mesh cgroup's "apps".
in_a() { dmsc_run_in_cgroup "$MESH_A/apps" dmsc_net_exec a "$@"; }
# on_b CMD...: CMD on host b itself, outside the mesh (the reference).
on_b() { dmsc_net_exec b "$@"; }
# streams VERDICT: the streams b's tunnel counted from node-a with VERDICT
streams() {
	awk -v v="verdict=\"$1\"" '/^dmsc_tunnel_streams_total\{/ && /side="dest"/ && /peer="node-a"/ && index($0, v) { n += $NF }
		END { print n + 0 }' "/run/dmsc/dmsc-tunnel.$BPID.prom" 2>/dev/null || echo 0
}
streams_ge() { (($(streams "$1") >= $2)); }

# 1. Redis: redis-benchmark's own tests through the VIP and the tunnel,
# plain, pipelined and with large values. --csv prints one line per test;
# any error makes it print a line that is not one, or exit non-zero.
bench() { apps_redis_bench in_a "$CACHE_VIP" "$@"; }
bench "redis 50 clients" -c 50 -n 20000 -t set,get,incr,lpush,lpop
bench "redis pipelined 32" -c 20 -n 100000 -P 32 -t set,get
bench "redis 64 KiB values" -c 10 -n 2000 -d 65536 -t set,get
lap "redis-benchmark"
# redis-benchmark's INCR all goes to one key: 20,000 acknowledged INCRs
# must have made it exactly 20,000 (each request carried once).
t_eq "each of the 20,000 INCRs was applied exactly once" \
	"$(in_a redis-cli -h "$CACHE_VIP" get 'counter:__rand_int__')" 20000
head -c $((3 * 1048576)) /dev/urandom >"$T/blob"
in_a redis-cli -h "$CACHE_VIP" -x set blob <"$T/blob" >/dev/null
in_a redis-cli -h "$CACHE_VIP" --raw get blob | head -c $((3 * 1048576)) >"$T/blob.got"
t_eq "a 3 MiB binary value comes back byte for byte" \
	"$(cmp -s "$T/blob" "$T/blob.got" && echo same || echo differs)" same
t_eq "... and is the one b's Redis holds (read on b)" \
	"$(on_b redis-cli -h "$B" --raw get blob | head -c $((3 * 1048576)) | cmp -s "$T/blob" - && echo same || echo differs)" same
for ((i = 0; i < 50000; i++)); do printf 'SET k:%d %d\r\n' "$i" "$i"; done >"$T/mass.txt"
in_a redis-cli -h "$CACHE_VIP" --pipe <"$T/mass.txt" >"$T/mass.out" 2>&1
t_eq "redis-cli --pipe: 50,000 replies, 0 errors" \
	"$(grep -o 'errors: [0-9]*, replies: [0-9]*' "$T/mass.out")" "errors: 0, replies: 50000"
t_eq "b's Redis holds the last key of the mass insertion" "$(on_b redis-cli -h "$B" get k:49999)" 49999
t_eq "a workload of a outside allow_from is refused at b (redis-cli ping)" \
	"$(dmsc_run_in_cgroup "$MESH_A/stranger" dmsc_net_exec a timeout 20 redis-cli -h "$CACHE_VIP" ping 2>/dev/null | grep -c PONG)" 0

# 2. PostgreSQL: pgbench's TPC-B-like load. The initial load (COPY of
# 200,000 rows) goes through db-load; the transactions through db.
b_sql() { on_b psql -h "$B" -U postgres -Atc "$1" postgres; }
apps_pgbench in_a "$LOAD_VIP" "$DB_VIP" b_sql "as b's server sees it"
lap "pgbench"
# A large result (about 8 MB) through the tunnel, and read on b itself.
apps_large_result in_a "$LOAD_VIP" b_sql "on b"

# 3. The tunnel carried all of it: b's tunnel counted the streams from
# node-a (one per connection: at least pgbench -C's 200 and
# redis-benchmark's clients), and refused the stranger's.
t_check "b's tunnel allowed the streams of node-a (at least 300)" t_wait 10 streams_ge allowed 300
t_check "... and denied the stranger's (denied_identity)" t_wait 10 streams_ge denied_identity 1
t_eq "a's datapath refused nothing at connect" \
	"$(DMSC_PIN_DIR=$PIN_A "$CTL" stats -o json | jq -c '[.services[] | .refused_rate + .refused_access + .refused_bytes] | add')" 0
t_eq "b's tunnel refused no handshake" \
	"$(awk '/^dmsc_tunnel_handshakes_total\{/ && /result="refused"/ { n += $NF } END { print n + 0 }' "/run/dmsc/dmsc-tunnel.$BPID.prom")" 0

t_summary
