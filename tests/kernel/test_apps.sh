#!/usr/bin/env bash
# Real applications through dmsc, on the running kernel: a Redis server and
# a PostgreSQL server behind VIPs, driven by their own clients
# (redis-benchmark, redis-cli, pgbench, psql), client and servers all in the
# mesh cgroup so that the same-host fast path carries their bytes. What an
# application must see through dmsc is what it sees without it: no error,
# every request answered once, every byte as sent.
set -u
. "$(cd "$(dirname "$0")/../lib" && pwd)/kernel.sh"
for tool in redis-server redis-cli redis-benchmark pgbench psql pg_isready; do
	if ! command -v "$tool" >/dev/null; then
		echo "# $tool is not installed (scripts/install-deps.sh)"
		echo "0 passed, 0 failed, 1 skipped"
		exit 0
	fi
done
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [[ ! -x $PGBIN/initdb ]] || ! id postgres >/dev/null 2>&1; then
	echo "# PostgreSQL's server (initdb, the postgres user) is not installed (scripts/install-deps.sh)"
	echo "0 passed, 0 failed, 1 skipped"
	exit 0
fi
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
mkdir -p "$T/redis"
dmsc_run_in_cgroup "$MESH" dmsc_net_exec r redis-server --bind "$R_ADDR" --port 6379 \
	--save '' --appendonly no --protected-mode no --dir "$T/redis" --maxclients 1000 \
	>"$T/redis.out" 2>&1 &
runuser -u postgres -- "$PGBIN/initdb" -D "$PGD/data" -A trust -U postgres --no-sync \
	>"$T/initdb.out" 2>&1 || t_fail "initdb: $(tail -n 3 "$T/initdb.out")"
echo "host all all 198.18.0.0/16 trust" >>"$PGD/data/pg_hba.conf"
dmsc_run_in_cgroup "$MESH" dmsc_net_exec pg runuser -u postgres -- "$PGBIN/postgres" \
	-D "$PGD/data" -c listen_addresses="$PG_ADDR" -c unix_socket_directories="$PGD" \
	-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=40 \
	>"$T/postgres.out" 2>&1 &
redis_up() { [[ $(dmsc_net_exec r redis-cli -h "$R_ADDR" ping 2>/dev/null) == PONG ]]; }
pg_up() { dmsc_net_exec pg pg_isready -q -h "$PG_ADDR" -t 1; }
t_wait 30 redis_up || { t_fail "redis-server ready: $(tail -n 3 "$T/redis.out")"; t_summary; exit 1; }
t_wait 60 pg_up || { t_fail "postgres ready: $(tail -n 3 "$T/postgres.out")"; t_summary; exit 1; }

# in_mesh CMD...: CMD in the client's namespace, in the mesh cgroup.
in_mesh() { dmsc_run_in_cgroup "$MESH" dmsc_net_exec c "$@"; }
fp() { "$CTL" stats -o json | jq ".services[] | select(.name == \"$1\") | .fastpath.$2"; }
svc() { "$CTL" stats -o json | jq ".services[] | select(.name == \"$1\") | .$2"; }

# 1. Redis: redis-benchmark's own tests through the VIP, plain, pipelined and
# with large values. --csv prints one line per test; any error makes it
# print a line that is not one, or exit non-zero.
# bench NAME ARGS...: redis-benchmark through the VIP; checks every test ran.
bench() {
	local name=$1 tests n
	shift
	tests=$(sed -n 's/.*-t \([a-z,]*\).*/\1/p' <<<"$*")
	n=$(tr ',' '\n' <<<"$tests" | wc -l)
	if ! in_mesh timeout 120 redis-benchmark -h "$CACHE_VIP" -p 6379 --csv "$@" >"$T/$name.csv" 2>"$T/$name.err"; then
		t_fail "$name: redis-benchmark failed: $(tail -n 2 "$T/$name.err")"
		return
	fi
	t_eq "$name: every test answered, no error ($tests)" \
		"$(grep -c '^"[A-Z]' "$T/$name.csv"):$(grep -ci error "$T/$name.csv" "$T/$name.err" | awk -F: '{ n += $NF } END { print n }')" "$n:0"
}
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
PGOPT=(-h "$DB_VIP" -U postgres)
in_mesh pgbench -h "$LOAD_VIP" -U postgres -i -s 2 -q postgres >"$T/pgbench-init.out" 2>&1
t_eq "pgbench -i through the VIP loads 200,000 accounts" \
	"$(in_mesh psql "${PGOPT[@]}" -Atc 'select count(*) from pgbench_accounts' postgres)" 200000
in_mesh timeout 300 pgbench "${PGOPT[@]}" -c 8 -j 2 -t 250 postgres >"$T/pgbench.out" 2>&1
t_eq "pgbench: 2000 of 2000 transactions, none failed" \
	"$(awk -F': ' '/actually processed/ { p = $2 } /failed transactions/ { split($2, f, " "); x = f[1] } END { print p "," x }' "$T/pgbench.out")" \
	"2000/2000,0"
t_eq "every transaction's update is there once (accounts' sum = history's sum)" \
	"$(in_mesh psql "${PGOPT[@]}" -Atc 'select (select sum(abalance) from pgbench_accounts) = (select coalesce(sum(delta), 0) from pgbench_history) and (select count(*) from pgbench_history) = 2000' postgres)" t
# New connections per transaction (-C): a connect through the VIP each time.
in_mesh timeout 300 pgbench "${PGOPT[@]}" -C -c 4 -j 2 -t 50 -S postgres >"$T/pgbench-C.out" 2>&1
t_eq "pgbench -C: 200 of 200 transactions, a new connection each" \
	"$(awk -F': ' '/actually processed/ { print $2 }' "$T/pgbench-C.out")" 200/200
# A large result (about 8 MB) read through the VIP and read straight from
# the server outside the mesh: the same bytes.
Q="copy (select g, md5(g::text) from generate_series(1, 200000) g) to stdout"
via=$(in_mesh psql -h "$LOAD_VIP" -U postgres -Atc "$Q" postgres | sha256sum)
direct=$(dmsc_run_in_cgroup "$OUTSIDE" dmsc_net_exec c psql -h "$PG_ADDR" -U postgres -Atc "$Q" postgres | sha256sum)
t_eq "an 8 MB query result through the VIP is the one read directly" "$via" "$direct"
t_range "the fast path carried pgbench's connections (db: paired)" "$(fp db paired)" 200 1000000
t_range "... and their messages (db: redirected)" "$(fp db redirected_msgs)" 8000 100000000
t_eq "dmsc refused no connection of the three services" \
	"$("$CTL" stats -o json | jq -c '[.services[] | select(.name | test("^(cache|db|db-load)$")) | .refused_rate + .refused_access + .refused_bytes] | add')" 0

t_summary
