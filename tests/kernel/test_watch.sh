#!/usr/bin/env bash
# dmscd's watches and its metrics endpoint under pressure:
# - a policy updated the way Kubernetes updates a mounted ConfigMap (a
#   directory swapped through the `..data` symlink), as one file and as a
#   directory of files;
# - allow_from re-resolved when a cgroup is removed and made again (a
#   restarted container gets a new cgroup id), checked with real connect()s
#   from a process in the new cgroup;
# - a large policy's metrics page served whole, while a stalled client
#   holds a connection that delays neither an apply nor SIGTERM.
set -u
. "$(cd "$(dirname "$0")/../lib" && pwd)/kernel.sh"
STALLPIDS=()
suite_cleanup() { dmsc_stop KILL "${STALLPIDS[@]}" $DPID; }
dmsc_suite_begin watch dwa$$
LOG=$T/dmscd.log
: >"$LOG"
dmsc_net_hosts c=198.18.0.2/16 b1=198.18.1.2/16 || exit 1
MESH=$(dmsc_cgroup_make "$P/mesh") || exit 1
dmsc_testsrv b1 v1 id 198.18.1.2:9080 600 "$T/b1.out"
dmsc_backends_ready "$T/b1.out"

start_dmscd() { dmsc_start_dmscd 120 "$@"; }
stop_dmscd() { dmsc_stop_dmscd "$@"; }

metrics_url() {
	grep -o 'http://[0-9.:]*/metrics' "$LOG" | tail -n 1
}

# svc NAME VIP PORT [ALLOW_FROM]: one service's JSON
svc() {
	local allow=""
	[[ -n ${4:-} ]] && allow=", \"allow_from\": [ \"$4\" ]"
	printf '{ "name": "%s", "vip": "%s", "port": %s%s, "backends": [ { "address": "198.18.1.2", "port": 9080 } ] }' \
		"$1" "$2" "$3" "$allow"
}
policy() {
	local sep="" s
	printf '{ "services": [ '
	for s in "$@"; do
		printf '%s%s' "$sep" "$s"
		sep=", "
	done
	printf ' ] }\n'
}

names() { "$CTL" show services -o json | jq -c '[.services[].name] | sort'; }
vips() { "$CTL" show services -o json | jq -c '[.services[] | .name + "@" + .vip] | sort'; }
vips_are() { [[ $(vips) == "$1" ]]; }
names_are() { [[ $(names) == "$1" ]]; }

# ---- 1. a Kubernetes ConfigMap volume: `..data` swapped (issue 10, item 15) --
# k8s_write DIR FILE...: what kubelet's atomic writer does: the files go
# into a new timestamped directory, a new `..data_tmp` symlink points at it
# and is renamed over `..data`, the user-visible names are symlinks into
# `..data/` (made once), and the old directory is removed.
k8s_write() {
	local dir=$1 ts old f
	shift
	ts=..$(date -u +%Y_%m_%d_%H_%M_%S).$RANDOM$RANDOM
	old=$(readlink "$dir/..data" 2>/dev/null)
	mkdir "$dir/$ts"
	for f in "$@"; do
		cp "$f" "$dir/$ts/$(basename "$f")"
	done
	ln -s "$ts" "$dir/..data_tmp"
	mv -T "$dir/..data_tmp" "$dir/..data"
	for f in "$@"; do
		[[ -L $dir/$(basename "$f") ]] || ln -s "..data/$(basename "$f")" "$dir/$(basename "$f")"
	done
	# Files of the old payload that the new one lacks lose their symlink.
	for f in "$dir"/*; do
		[[ -L $f && ! -e $f ]] && rm -f "$f"
	done
	[[ -n $old ]] && rm -rf "${dir:?}/$old"
}

mkdir -p "$T/src1" "$T/src2" "$T/cm" "$T/cmdir"
policy "$(svc reviews 198.19.0.10 9080)" >"$T/src1/policy.json"
policy "$(svc reviews 198.19.0.10 9080)" "$(svc ratings 198.19.0.11 9080)" >"$T/src2/policy.json"
k8s_write "$T/cm" "$T/src1/policy.json"
start_dmscd --cgroup "$MESH" --policy "$T/cm/policy.json"
t_eq "a policy file that is a ConfigMap symlink is applied" "$(names)" '["reviews"]'
k8s_write "$T/cm" "$T/src2/policy.json"
t_wait 20 names_are '["ratings","reviews"]'
t_eq "file mode: the ConfigMap update (\`..data\` renamed over) is applied" "$(names)" '["ratings","reviews"]'
k8s_write "$T/cm" "$T/src1/policy.json"
t_wait 20 names_are '["reviews"]'
t_eq "file mode: a second update is applied too (the new target is watched)" "$(names)" '["reviews"]'
stop_dmscd

# A directory of policies, each file a symlink into `..data/`.
policy "$(svc reviews 198.19.0.10 9080)" >"$T/src1/10-reviews.json"
policy "$(svc ratings 198.19.0.11 9080)" >"$T/src2/20-ratings.json"
k8s_write "$T/cmdir" "$T/src1/10-reviews.json"
start_dmscd --policy "$T/cmdir"
t_eq "a ConfigMap directory is applied" "$(names)" '["reviews"]'
k8s_write "$T/cmdir" "$T/src1/10-reviews.json" "$T/src2/20-ratings.json"
t_wait 20 names_are '["ratings","reviews"]'
t_eq "directory mode: the ConfigMap update with a new file is applied" "$(names)" '["ratings","reviews"]'
# The same names, new contents: only `..data` changes in the directory.
mkdir -p "$T/src3"
policy "$(svc reviews 198.19.0.10 9081)" >"$T/src3/10-reviews.json"
policy "$(svc ratings 198.19.0.11 9081)" >"$T/src3/20-ratings.json"
k8s_write "$T/cmdir" "$T/src3/10-reviews.json" "$T/src3/20-ratings.json"
t_wait 20 vips_are '["ratings@198.19.0.11:9081/tcp","reviews@198.19.0.10:9081/tcp"]'
t_eq "directory mode: an update of the files' contents (no name changes) is applied" "$(vips)" \
	'["ratings@198.19.0.11:9081/tcp","reviews@198.19.0.10:9081/tcp"]'
k8s_write "$T/cmdir" "$T/src2/20-ratings.json"
t_wait 20 names_are '["ratings"]'
t_eq "directory mode: a file dropped from the ConfigMap is removed" "$(names)" '["ratings"]'
# (An apply between the swap and the removal of a dropped file's dangling
# symlink is refused, and the removal's own event applies it again.)
t_check "no apply failed" test "$(t_nlines "$LOG" 'apply failed')" -eq 0
stop_dmscd

# ---- 2. allow_from follows a cgroup removed and made again (issue 10, item 12) --
# A restarted container: its cgroup is removed and made again under the
# same path, with a new id. dmscd resolves every rule again (its own and
# those `dmscctl apply` wrote) and never opens the service to anyone else.
APP_REL=dmsc-test/$P/mesh/app
APP2_REL=dmsc-test/$P/mesh/app2
dmsc_cgroups APP=mesh/app APP2=mesh/app2 OTHER=mesh/other || exit 1
policy "$(svc web 198.19.0.20 80 "$APP_REL")" >"$T/allow.json"
policy "$(svc web 198.19.0.20 80 "$APP_REL")" "$(svc api 198.19.0.21 80 "$APP2_REL")" >"$T/allow2.json"
# connects CG VIP N: how many of N connect()s from a process in CG succeed
connects() {
	dmsc_run_in_cgroup "$1" dmsc_net_exec c "$PROBE" --json --max-seconds 20 --connect "$2:80" \
		--count "$3" | jq .ok
}
connects_ok() { [[ $(connects "$1" "$2" 1) == 1 ]]; }
# rule_ids SERVICE: the cgroup ids of its rules in the maps ("none" when unresolved)
rule_ids() {
	"$CTL" show access -o json |
		jq -r --arg s "$1" '[.services[] | select(.name == $s) | .allow[] |
			(if .resolved then (.cgroup_id | tostring) else "none" end)] | join(",")'
}
rule_ids_are() { [[ $(rule_ids "$1") == "$2" ]]; }
# remake CG: the cgroup removed (it is empty) and made again at once
remake() { rmdir "$1" && mkdir "$1"; }

start_dmscd --policy "$T/allow.json"
old_id=$(stat -c %i "$APP")
t_eq "allow_from resolves to the cgroup's id" "$(rule_ids web)" "$old_id"
t_eq "a process in the allowed cgroup connects" "$(connects "$APP" 198.19.0.20 3)" 3
t_eq "a process in another cgroup of the mesh does not" "$(connects "$OTHER" 198.19.0.20 3)" 0
remake "$APP"
new_id=$(stat -c %i "$APP")
t_check "the cgroup made again has a new id ($old_id -> $new_id)" test "$new_id" != "$old_id"
t_wait 10 rule_ids_are web "$new_id"
t_eq "dmscd re-resolves the rule: only the new id is in the map" "$(rule_ids web)" "$new_id"
t_wait 10 connects_ok "$APP" 198.19.0.20
t_eq "a process in the re-made cgroup connects" "$(connects "$APP" 198.19.0.20 3)" 3
t_eq "...and still nobody else" "$(connects "$OTHER" 198.19.0.20 3)" 0
rmdir "$APP"
t_wait 10 rule_ids_are web none
t_eq "a removed cgroup's id is deleted (the rule waits, unresolved)" "$(rule_ids web)" none
t_eq "...and the service is closed to everyone meanwhile" "$(connects "$OTHER" 198.19.0.20 3)" 0
mkdir "$APP"
t_wait 10 connects_ok "$APP" 198.19.0.20
t_eq "made again later, the cgroup is resolved and its process connects" \
	"$(connects "$APP" 198.19.0.20 3):$(rule_ids web)" "3:$(stat -c %i "$APP")"
# A rule `dmscctl apply` wrote while dmscd runs (and does not re-apply).
"$CTL" apply "$T/allow2.json" >/dev/null
t_eq "dmscctl apply resolves at apply time" "$(connects "$APP2" 198.19.0.21 3)" 3
old_id=$(stat -c %i "$APP2")
remake "$APP2"
t_check "the cgroup made again has a new id" test "$(stat -c %i "$APP2")" != "$old_id"
# dmscd watches this path from its next periodic check on (10 s).
t_wait 30 connects_ok "$APP2" 198.19.0.21
t_eq "dmscd re-resolves a rule that dmscctl apply wrote" \
	"$(connects "$APP2" 198.19.0.21 3):$(rule_ids api)" "3:$(stat -c %i "$APP2")"
t_eq "...and nobody else may connect" "$(connects "$OTHER" 198.19.0.21 3)" 0
t_check "each re-resolution is logged" grep -q "allow_from \"$APP_REL\" (service id [0-9]*) re-resolved: cgroup id [0-9]* -> none" "$LOG"
stop_dmscd

# ---- 3. metrics of a large policy, and stalled clients (issue 10, item 14) --
# N services of 4 backends (past the 1000 where auto leaves out the
# per-backend series). Each connection is served by a thread from a
# snapshot, so a client that reads nothing (or sends nothing) delays
# neither an apply nor SIGTERM.
N=${WATCH_METRICS_SERVICES:-3000}
big_policy() {
	awk -v n="$N" -v port="$1" 'BEGIN {
		printf "{ \"services\": [\n"
		for (i = 0; i < n; i++) {
			a = int(i / 250); b = i % 250 + 1
			printf "%s{ \"name\": \"svc-%d\", \"vip\": \"198.19.%d.%d\", \"port\": %d, \"backends\": [", i ? ",\n" : "", i, 100 + a, b, i == 0 ? port : 80
			for (k = 0; k < 4; k++)
				printf "%s{ \"address\": \"198.18.%d.%d\", \"port\": %d }", k ? ", " : " ", 100 + a, b, 8080 + k
			printf " ] }"
		}
		printf "\n] }\n"
	}'
}
big_policy 80 >"$T/big.json"
big_policy 81 >"$T/big81.json"
cp "$T/big.json" "$T/bigpol.json"
"$CTL" uninstall >/dev/null
start_dmscd --cgroup "$MESH" --policy "$T/bigpol.json" --max-services $((N + 16)) --max-backends $((4 * N + 16))
t_check "a $N-service policy is applied" grep -qE "\(start\): $N services, " "$LOG"
url=$(metrics_url)
port=${url##*:}
port=${port%%/*}
curl -sS --max-time 60 -o "$T/big.txt" -w '%{http_code} %{size_download} %{time_total}\n' "$url" >"$T/big.curl" 2>&1
rc=$?
read -r code size secs <"$T/big.curl"
echo "# scrape of $N services: $size bytes in $secs s"
t_eq "the page is served whole (curl exit 0, 200)" "$rc:$code" "0:200"
t_eq "...its last line is the last family's sample" "$(tail -n 1 "$T/big.txt" | cut -d' ' -f1)" dmsc_agent_start_time_seconds
t_eq "...with a sample per service" "$(grep -c '^dmsc_service_connections_total{' "$T/big.txt")" "$N"
t_eq "auto leaves out the per-backend series past 1000 services" \
	"$(grep -c '^dmsc_backend_connections_total' "$T/big.txt"):$(awk '$1 == "dmsc_metrics_backend_series" { print $2 }' "$T/big.txt")" "0:0"
# A client that reads slowly (8 s for the page from its first byte, through
# a 64 KiB receive buffer) gets it whole too: before the fix the page was
# cut off 2 s after the connection came (past what the socket buffers held).
/usr/bin/python3 - "$port" "$size" >"$T/big-slow.txt" 2>"$T/big-slow.err" <<'PY'
import socket, sys, time
port, size = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.settimeout(60)
s.connect(("127.0.0.1", port))
s.sendall(b"GET /metrics HTTP/1.1\r\nHost: dmscd\r\n\r\n")
got, start, data = 0, None, []
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    chunk = s.recv(65536)
    if not chunk:
        break
    if start is None:
        start = time.monotonic()
    data.append(chunk)
    got += len(chunk)
    # at most size/8 bytes a second
    ahead = got / (size / 8.0) - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(min(ahead, 1.0))
head, _, body = b"".join(data).partition(b"\r\n\r\n")
for line in head.split(b"\r\n"):
    if line.lower().startswith(b"content-length:"):
        print(int(line.split(b":")[1]), file=sys.stderr)
sys.stdout.buffer.write(body)
PY
t_eq "a client reading slowly (8 s for the page) gets it whole" \
	"$(wc -c <"$T/big-slow.txt"):$(tail -n 1 "$T/big-slow.txt" | cut -d' ' -f1)" \
	"$(head -n 1 "$T/big-slow.err"):dmsc_agent_start_time_seconds"
awk -f "$TOP/tests/lib/promcheck.awk" "$T/big.txt" >"$T/bigcheck.out" 2>&1
t_check "the large page passes the strict text-format check" test $? -eq 0

# stall SEND: a client that connects (and sends a request if SEND is 1)
# and then reads nothing, with a 4 KiB receive buffer; "ready" once
# connected.
stall() {
	/usr/bin/python3 - "$port" "$1" <<'PY' &
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", int(sys.argv[1])))
if sys.argv[2] == "1":
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: dmscd\r\n\r\n")
print("ready", flush=True)
time.sleep(60)
PY
	STALLPIDS+=($!)
}
# held: server-side connections of the endpoint with unsent bytes queued
held() { ss -Htn state established "( sport = :$port )" | awk '$2 > 0' | wc -l; }
held_one() { [[ $(held) -ge 1 ]]; }
stall 1 >"$T/stall1.out"
t_wait 30 held_one
t_check "a client that reads nothing holds a connection with a page half sent" held_one
n_before=$(t_nlines "$LOG" '^dmscd: applied .*\(changed\)')
cp "$T/big81.json" "$T/bigpol.json.tmp" && mv "$T/bigpol.json.tmp" "$T/bigpol.json"
t_wait_lines "$LOG" '^dmscd: applied .*\(changed\)' $((n_before + 1)) 25
t_check "a policy change is applied meanwhile" test "$(t_nlines "$LOG" '^dmscd: applied .*\(changed\)')" -gt "$n_before"
# Before the fix the loop served the connection until it gave up on it:
# the apply could only come once the page was abandoned.
t_check "...while the stalled connection is still being served (the loop did not wait for it)" held_one
t_eq "the change is in the maps" "$("$CTL" show services -o json | jq -r '.services[] | select(.name == "svc-0") | .vip')" "198.19.100.1:81/tcp"
# Connections past the bound get a 503 at once.
for i in 1 2 3; do stall 0 >"$T/stall0-$i.out"; done
t_wait 10 grep -q ready "$T/stall0-3.out"
# "ready" means connected, not yet accepted by dmscd: until it has taken
# the three, a scrape may still be served; once it has, it gets a 503.
scrape_503() { [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$url") == 503 ]]; }
t_wait 30 scrape_503
t_check "past 4 connections at once, a scrape gets 503 at once" scrape_503
# SIGTERM with stalled clients: before the fix, each connection that sends
# nothing held the loop 2 s, and the one after the signal was served too.
for i in 4 5; do stall 0 >"$T/stall0-$i.out"; done
t_wait 10 grep -q ready "$T/stall0-5.out"
t0=$(date +%s%N)
kill -TERM "$DPID"
for ((i = 0; i < 400; i++)); do
	kill -0 "$DPID" 2>/dev/null || break
	sleep 0.05
done
t1=$(date +%s%N)
gone=$(kill -0 "$DPID" 2>/dev/null && echo running || echo exited)
wait "$DPID" 2>/dev/null
DPID=
echo "# dmscd exited $(((t1 - t0) / 1000000)) ms after SIGTERM with 6 stalled clients"
t_eq "SIGTERM with stalled clients: dmscd exits" "$gone" exited
t_range "...within 1.5 s (before the fix: 2 s per stalled connection, 2 at least)" "$(((t1 - t0) / 1000000))" 0 1500
for p in "${STALLPIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
STALLPIDS=()

t_summary
