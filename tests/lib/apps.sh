# shellcheck shell=bash
# apps.sh: what the suites of real applications share (test_apps.sh on one
# host, test_mtls_apps.sh between two): the clients and servers they need,
# redis-benchmark's run and check, pgbench's count. Source it after
# kernel.sh.

# apps_need: exits, counted as skipped, when a client or server is not
# installed (scripts/install-deps.sh installs them); sets PGBIN, the
# directory of PostgreSQL's server binaries.
apps_need() {
	local tool
	for tool in redis-server redis-cli redis-benchmark pgbench psql pg_isready; do
		if ! command -v "$tool" >/dev/null; then
			echo "# $tool is not installed (scripts/install-deps.sh)"
			echo "0 passed, 0 failed, 1 skipped"
			exit 0
		fi
	done
	PGBIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
	if [[ ! -x $PGBIN/initdb ]] || ! id postgres >/dev/null 2>&1; then
		echo "# PostgreSQL's server (initdb, the postgres user) is not installed (scripts/install-deps.sh)"
		echo "0 passed, 0 failed, 1 skipped"
		exit 0
	fi
}

# apps_redis_bench RUN VIP NAME ARGS...: redis-benchmark against VIP:6379
# run by the function RUN (the client's namespace and cgroup), --csv; checks
# that every test named by -t printed its line and nothing said error.
apps_redis_bench() {
	local run=$1 vip=$2 name=$3 tests n
	shift 3
	tests=$(sed -n 's/.*-t \([a-z,]*\).*/\1/p' <<<"$*")
	n=$(tr ',' '\n' <<<"$tests" | wc -l)
	if ! "$run" timeout 180 redis-benchmark -h "$vip" -p 6379 --csv "$@" >"$T/$name.csv" 2>"$T/$name.err"; then
		t_fail "$name: redis-benchmark failed: $(tail -n 2 "$T/$name.err")"
		return
	fi
	t_eq "$name: every test answered, no error ($tests)" \
		"$(grep -c '^"[A-Z]' "$T/$name.csv"):$(grep -ci error "$T/$name.csv" "$T/$name.err" | awk -F: '{ n += $NF } END { print n }')" "$n:0"
}

# apps_pgbench_done FILE: "processed/wanted,failed" of pgbench's report
apps_pgbench_done() {
	awk -F': ' '/actually processed/ { p = $2 } /failed transactions/ { split($2, f, " "); x = f[1] }
		END { print p "," x }' "$1"
}

apps__redis_up() { [[ $(dmsc_net_exec "$1" redis-cli -h "$2" ping 2>/dev/null) == PONG ]]; }

# apps_servers CGROUP REDIS_HOST REDIS_ADDR PG_HOST PG_ADDR PGD: starts
# redis-server on REDIS_ADDR:6379 in namespace REDIS_HOST and PostgreSQL
# (data in PGD, a directory the postgres user owns: it refuses to run as
# root) on PG_ADDR:5432 in PG_HOST, both in CGROUP, and waits until both
# answer (bounded); a server that does not start ends the suite.
apps_servers() {
	local cg=$1 rh=$2 ra=$3 ph=$4 pa=$5 pgd=$6
	mkdir -p "$T/redis"
	dmsc_run_in_cgroup "$cg" dmsc_net_exec "$rh" redis-server --bind "$ra" --port 6379 \
		--save '' --appendonly no --protected-mode no --dir "$T/redis" --maxclients 1000 \
		>"$T/redis.out" 2>&1 &
	runuser -u postgres -- "$PGBIN/initdb" -D "$pgd/data" -A trust -U postgres --no-sync \
		>"$T/initdb.out" 2>&1 || t_fail "initdb: $(tail -n 3 "$T/initdb.out")"
	echo "host all all 198.18.0.0/16 trust" >>"$pgd/data/pg_hba.conf"
	dmsc_run_in_cgroup "$cg" dmsc_net_exec "$ph" runuser -u postgres -- "$PGBIN/postgres" \
		-D "$pgd/data" -c listen_addresses="$pa" -c unix_socket_directories="$pgd" \
		-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=40 \
		>"$T/postgres.out" 2>&1 &
	t_wait 30 apps__redis_up "$rh" "$ra" ||
		{ t_fail "redis-server ready: $(tail -n 3 "$T/redis.out")"; t_summary; exit 1; }
	t_wait 60 dmsc_net_exec "$ph" pg_isready -q -h "$pa" -t 1 ||
		{ t_fail "postgres ready: $(tail -n 3 "$T/postgres.out")"; t_summary; exit 1; }
}

# apps_pgbench RUN LOAD_VIP DB_VIP SQL WHERE: pgbench's TPC-B-like load from
# the function RUN (the client): the initial load (200,000 accounts, a bulk
# COPY) through LOAD_VIP, then 2,000 transactions of 8 clients through
# DB_VIP, none failed; then the function SQL (a query as "psql -Atc" runs
# it, WHERE says where) finds every transaction's update there once; then
# 200 transactions with a connection each.
apps_pgbench() {
	local run=$1 load=$2 db=$3 sql=$4 where=$5
	"$run" timeout 300 pgbench -h "$load" -U postgres -i -s 2 -q postgres >"$T/pgbench-init.out" 2>&1
	t_eq "pgbench -i through the VIP loads 200,000 accounts" \
		"$("$run" psql -h "$db" -U postgres -Atc 'select count(*) from pgbench_accounts' postgres)" 200000
	"$run" timeout 300 pgbench -h "$db" -U postgres -c 8 -j 2 -t 250 postgres >"$T/pgbench.out" 2>&1
	t_eq "pgbench: 2000 of 2000 transactions, none failed" "$(apps_pgbench_done "$T/pgbench.out")" \
		"2000/2000,0"
	t_eq "every transaction's update is there once ($where)" \
		"$("$sql" 'select (select sum(abalance) from pgbench_accounts) = (select coalesce(sum(delta), 0) from pgbench_history) and (select count(*) from pgbench_history) = 2000')" t
	# a new connection per transaction (-C): a connect through the VIP each
	"$run" timeout 300 pgbench -h "$db" -U postgres -C -c 4 -j 2 -t 50 -S postgres >"$T/pgbench-C.out" 2>&1
	t_eq "pgbench -C: 200 of 200 transactions, a new connection each" \
		"$(awk -F': ' '/actually processed/ { print $2 }' "$T/pgbench-C.out")" 200/200
}

# apps_large_result RUN VIP REF WHERE: a query's 8 MB result read through
# VIP by the function RUN is the one the function REF reads (REF takes the
# query; WHERE says where it reads).
apps_large_result() {
	local q="copy (select g, md5(g::text) from generate_series(1, 200000) g) to stdout" via ref
	via=$("$1" psql -h "$2" -U postgres -Atc "$q" postgres | sha256sum)
	ref=$("$3" "$q" | sha256sum)
	t_eq "an 8 MB query result through the VIP is the one read $4" "$via" "$ref"
}
