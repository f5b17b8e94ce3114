#!/usr/bin/env bash
# Real applications through dmsc, on the running kernel: a Redis server and
# a PostgreSQL server behind VIPs, driven by their own clients
# (redis-benchmark, redis-cli, pgbench, psql), client and servers all in the
# mesh cgroup so that the same-host fast path carries their bytes. What an
# application must see through dmsc is what it sees without it: no error,
# every request answered once, every byte as sent.
set -u
. "$(cd "$(dirname "$0")/../lib" && pwd)/kernel.sh"
. "$(cd "$(dirname "$0")/../lib" && pwd)/apps.sh"
apps_need
dmsc_suite_begin apps dapp$$
CACHE_VIP=198.19.20.1 DB_VIP=198.19.20.2 LOAD_VIP=198.19.20.3
R_ADDR=198.18.1.2 PG_ADDR=198.18.1.3
dmsc_net_hosts c=198.18.0.2/16 r=$R_ADDR/16 pg=$PG_ADDR/16 || exit 1
dmsc_cgroups MESH=mesh OUTSIDE=outside || exit 1
# PostgreSQL refuses to run as root: its data directory belongs to postgres,
# outside $T (which only root may enter).
PGD=$(mktemp -d /tmp/dmsc-apps-pg.XXXXXX)
suite_cleanup() {
	[[ -n ${PGD:-} && $PGD == /tmp/dmsc-apps-pg.* ]] && rm -rf "$PGD"
}
chown postgres: "$PGD"

t_check "install on the test cgroup" "$CTL" install --cgroup "$MESH"
cat >"$T/p.json" <<EOF
{ "services": [
  { "name": "cache", "vip": "$CACHE_VIP", "port": 6379,
    "backends": [ { "address": "$R_ADDR", "port": 6379 } ] },
  { "name": "db", "vip": "$DB_VIP", "port": 5432,
    "backends": [ { "address": "$PG_ADDR", "port": 5432 } ] },
  { "name": "db-load", "vip": "$LOAD_VIP", "port": 5432,
    "backends": [ { "address": "$PG_ADDR", "port": 5432 } ] } ] }
EOF
t_check "apply the cache, db and db-load services" "$CTL" apply "$T/p.json"

# The servers run in the mesh cgroup too: both ends of each connection are
# mesh sockets of this host, the fast path's case.
apps_servers "$MESH" r "$R_ADDR" pg "$PG_ADDR" "$PGD"

# in_mesh CMD...: CMD in the client's namespace, in the mesh cgroup.
in_mesh() { dmsc_run_in_cgroup "$MESH" dmsc_net_exec c "$@"; }
fp() { "$CTL" stats -o json | jq ".services[] | select(.name == \"$1\") | .fastpath.$2"; }
svc() { "$CTL" stats -o json | jq ".services[] | select(.name == \"$1\") | .$2"; }

# 1. Redis: redis-benchmark's own tests through the VIP, plain, pipelined and
# with large values. --csv prints one line per test; any error makes it
# print a line that is not one, or exit non-zero.
# bench NAME ARGS...: redis-benchmark through the VIP; checks every test ran.
bench() { apps_redis_bench in_mesh "$CACHE_VIP" "$@"; }
bench "redis 50 clients" -c 50 -n 20000 -t set,get,incr,lpush,lpop
bench "redis pipelined 32" -c 20 -n 100000 -P 32 -t set,get
bench "redis 64 KiB values" -c 10 -n 2000 -d 65536 -t set,get
# redis-benchmark's INCR all goes to one key: 20,000 acknowledged INCRs must
# have made it exactly 20,000 (each request carried once, none repeated).
t_eq "each of the 20,000 INCRs was applied exactly once" \
	"$(in_mesh redis-cli -h "$CACHE_VIP" get 'counter:__rand_int__')" 20000
t_range "the fast path carried the cache's connections (paired)" "$(fp cache paired)" 1 1000000

# A 3 MiB binary value written and read back whole, each way a connection.
head -c $((3 * 1048576)) /dev/urandom >"$T/blob"
in_mesh redis-cli -h "$CACHE_VIP" -x set blob <"$T/blob" >/dev/null
in_mesh redis-cli -h "$CACHE_VIP" --raw get blob | head -c $((3 * 1048576)) >"$T/blob.got"
t_eq "a 3 MiB binary value comes back byte for byte" \
	"$(cmp -s "$T/blob" "$T/blob.got" && echo same || echo differs)" same
# Mass insertion: redis-cli --pipe streams 50,000 commands on one connection
# and counts the replies itself.
for ((i = 0; i < 50000; i++)); do printf 'SET k:%d %d\r\n' "$i" "$i"; done >"$T/mass.txt"
in_mesh redis-cli -h "$CACHE_VIP" --pipe <"$T/mass.txt" >"$T/mass.out" 2>&1
t_eq "redis-cli --pipe: 50,000 replies, 0 errors" \
	"$(grep -o 'errors: [0-9]*, replies: [0-9]*' "$T/mass.out")" "errors: 0, replies: 50000"
t_eq "a key of the mass insertion reads back" "$(in_mesh redis-cli -h "$CACHE_VIP" get k:49999)" 49999

# 2. PostgreSQL: pgbench's TPC-B-like load through the VIP. The initial
# load (COPY of 200,000 rows) and the large result below are bulk flows: a
# writer that outruns its reader leaves the fast path and, with accelerate
# auto, its service's next connections stay on TCP for 60 s
# (docs/fastpath.md). They go through db-load; the transactions through db,
# whose connections the fast path must carry.
db_sql() { in_mesh psql -h "$DB_VIP" -U postgres -Atc "$1" postgres; }
apps_pgbench in_mesh "$LOAD_VIP" "$DB_VIP" db_sql "accounts' sum = history's sum"
# A large result (about 8 MB) read through the VIP and read straight from
# the server outside the mesh: the same bytes.
direct_sql() { dmsc_run_in_cgroup "$OUTSIDE" dmsc_net_exec c psql -h "$PG_ADDR" -U postgres -Atc "$1" postgres; }
apps_large_result in_mesh "$LOAD_VIP" direct_sql directly
t_range "the fast path carried pgbench's connections (db: paired)" "$(fp db paired)" 200 1000000
t_range "... and their messages (db: redirected)" "$(fp db redirected_msgs)" 8000 100000000
t_eq "dmsc refused no connection of the three services" \
	"$("$CTL" stats -o json | jq -c '[.services[] | select(.name | test("^(cache|db|db-load)$")) | .refused_rate + .refused_access + .refused_bytes] | add')" 0

t_summary
