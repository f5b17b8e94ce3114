#!/usr/bin/env bash
# HTTP/2 through dmsc-l7 (docs/design.md decision 26): h2c with prior
# knowledge from curl and h2load, each stream routed on its own (path,
# header, weights) to h2c backends (nghttpd), request limits, timeouts and
# retries per stream, and a slow reader that does not grow the helper's
# memory (flow control end to end).
set -u
. "$(cd "$(dirname "$0")/../lib" && pwd)/kernel.sh"
L7PID=
suite_cleanup() { dmsc_stop TERM "$L7PID"; }
dmsc_suite_begin l7h2 dlh$$
for tool in nghttpd h2load; do
	if ! command -v "$tool" >/dev/null; then
		echo "skip - $tool is missing (scripts/install-deps.sh installs it)"
		exit 77
	fi
done
WEB=198.19.78.1
LIMITED=198.19.78.2
SLOW=198.19.78.3
RETRY=198.19.78.4
BIG=198.19.78.5
SILENT=198.19.78.6
BUSY=198.19.78.7
DEAD=198.19.78.8
STICKY=198.19.78.9
STICKY_H=198.19.78.10
STICKY_C=198.19.78.11
dmsc_net_hosts c=198.18.0.2/16 n=198.18.0.1/16 b1=198.18.1.2/16 \
	b2=198.18.1.3/16 b3=198.18.1.4/16 || exit 1
MESH=$(dmsc_cgroup_make "$P/mesh") || exit 1

# h2c backends: nghttpd serving a directory whose files name the backend
for v in v1 v2; do
	mkdir -p "$T/www-$v/canary" "$T/www-$v/v1only"
	echo "$v" >"$T/www-$v/id"
	echo "$v" >"$T/www-$v/canary/id"
	echo "$v" >"$T/www-$v/v1only/id"
done
head -c 20000000 /dev/zero >"$T/www-v1/big"
for v in v1 v2; do head -c 1000000 /dev/zero >"$T/www-$v/mid"; done
dmsc_net_exec b1 nghttpd --no-tls -d "$T/www-v1" --address 198.18.1.2 8080 >"$T/b1.out" 2>&1 &
dmsc_net_exec b2 nghttpd --no-tls -d "$T/www-v2" --address 198.18.1.3 8080 >"$T/b2.out" 2>&1 &
# b3: a backend that accepts and never answers (the kernel's backlog
# completes the handshake; nobody reads)
dmsc_net_exec b3 python3 -c '
import socket, time
s = socket.socket(); s.bind(("198.18.1.4", 8080)); s.listen(64)
print("ready", flush=True); time.sleep(600)' >"$T/b3.out" 2>&1 &
# b3:8081: an h2c backend that answers every request 503 (frames by hand:
# SETTINGS, then per request HEADERS ":status: 503" with END_STREAM, the
# name from HPACK's static table, the value literal)
dmsc_net_exec b3 python3 -c '
import socket, struct, threading, time
def serve(c):
    c.settimeout(30)
    buf = b""
    def need(n):
        nonlocal buf
        while len(buf) < n:
            d = c.recv(65536)
            if not d: raise EOFError
            buf += d
        out, buf = buf[:n], buf[n:]
        return out
    try:
        need(24)
        c.sendall(struct.pack(">I", 0)[1:] + b"\x04\x00" + struct.pack(">I", 0))
        while True:
            h = need(9)
            ln, typ, fl, sid = int.from_bytes(h[:3], "big"), h[3], h[4], struct.unpack(">I", h[5:])[0] & 0x7fffffff
            need(ln)
            if typ == 4 and not fl & 1:
                c.sendall(b"\x00\x00\x00\x04\x01" + struct.pack(">I", 0))
            if typ == 1:
                blk = b"\x08\x03503"
                c.sendall(len(blk).to_bytes(3, "big") + b"\x01\x05" + struct.pack(">I", sid) + blk)
    except Exception:
        pass
    c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.1.4", 8081)); s.listen(64)
print("ready", flush=True)
end = time.time() + 600
while time.time() < end:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()' >"$T/b3busy.out" 2>&1 &
up() { dmsc_net_exec "$1" ss -Htln "sport = :8080" | grep -q .; }
for h in b1 b2; do t_wait 10 up "$h" || { t_fail "nghttpd on $h"; t_summary; exit 1; }; done
dmsc_backends_ready "$T/b3.out" "$T/b3busy.out"

cat >"$T/policy.json" <<EOF
{ "services": [
  { "name": "web", "vip": "$WEB", "port": 80, "protocol": "http",
    "backends": $(dmsc_json_backends 198.18.1.2:8080,1,v1 198.18.1.3:8080,1,v2),
    "routes": [
      { "match": { "path_prefix": "/canary/" }, "backends": { "version": "v2" } },
      { "match": { "path_prefix": "/", "headers": { "x-canary": "yes" } }, "backends": { "version": "v2" } },
      { "match": { "path_prefix": "/v1only/" }, "backends": { "version": "v1" } } ] },
  $(dmsc_json_http limited "$LIMITED" 198.18.1.2:8080 '"rate_limit": { "requests_per_second": 1, "burst": 5 }'),
  $(dmsc_json_http slow "$SLOW" 198.18.1.4:8080 \
	'"routes": [ { "match": { "path_prefix": "/" }, "timeout_ms": 500, "retries": 0 } ]'),
  $(dmsc_json_http retry "$RETRY" "198.18.1.9:8080 198.18.1.2:8080" '"routes": [
      { "match": { "path_prefix": "/noretry" }, "retries": 0 },
      { "match": { "path_prefix": "/" }, "retries": 2 } ]'),
  $(dmsc_json_http big "$BIG" 198.18.1.2:8080),
  $(dmsc_json_http silent "$SILENT" 198.18.1.4:8080),
  $(dmsc_json_http dead "$DEAD" 198.18.1.9:8080 '"routes": [ { "match": { "path_prefix": "/" }, "retries": 0 } ]'),
  $(dmsc_json_http busy "$BUSY" "198.18.1.4:8081 198.18.1.2:8080" \
	'"routes": [ { "match": { "path_prefix": "/canary/" }, "idempotent": true } ]'),
  $(dmsc_json_http sticky "$STICKY" "198.18.1.2:8080 198.18.1.3:8080" '"affinity": "client"'),
  $(dmsc_json_http stickyh "$STICKY_H" "198.18.1.2:8080 198.18.1.3:8080" '"affinity": { "header": "x-user" }'),
  $(dmsc_json_http stickyc "$STICKY_C" "198.18.1.2:8080 198.18.1.3:8080" '"affinity": { "cookie": "session" }') ] }
EOF
t_check "install on the test cgroup" "$CTL" install --cgroup "$MESH"
t_check "apply the policy" "$CTL" apply "$T/policy.json"
# the helper in a cgroup of the mesh, as dmscd --l7-fastpath on runs it
# (docs/design.md decision 99): its clients' connections are fast-path pairs
mkdir -p "$MESH/dmsc-l7"
dmsc_exec_in_cgroup "$MESH/dmsc-l7" ip netns exec "${P}n" "$BIN/dmsc-l7" --listen 198.18.0.1:15001 --policy "$T/policy.json" \
	--workers 2 --metrics-file "$T/metrics.prom" --access-log "$T/access.log" \
	>"$T/l7.out" 2>"$T/l7.err" &
L7PID=$!
dmsc_wait_ready "$T/l7.out" 10 || { t_fail "dmsc-l7 ready"; cat "$T/l7.err"; t_summary; exit 1; }

in_c() { dmsc_run_in_cgroup "$MESH" dmsc_net_exec c "$@"; }
h2curl() { in_c curl -sS --http2-prior-knowledge --max-time 10 "$@"; }
# the helper's peak resident memory so far (kB)
hwm_kb() { awk '/^VmHWM/ { print $2 }' "/proc/$L7PID/status"; }
# glibc's per-thread cache of freed blocks as the helper runs with it
# (docs/design.md decision 90): its environment, read by glibc at start
tcache_of() { tr '\0' '\n' <"/proc/$1/environ" | sed -n 's/^GLIBC_TUNABLES=.*glibc\.malloc\.tcache_count=\([0-9]*\).*/\1/p'; }
t_eq "the helper started itself with glibc's cache of 128 freed blocks per size, its name kept" \
	"$(tcache_of "$L7PID") $(cat "/proc/$L7PID/comm")" "128 dmsc-l7"

# 1. routing per stream
t_eq "curl --http2-prior-knowledge speaks HTTP/2 through the VIP" \
	"$(h2curl -o /dev/null -w '%{http_version} %{http_code}' "http://$WEB/id")" "2 200"
# a header block of a mesh proxy's size (60 KiB, 100 fields: decision 94):
# a 20 KB cookie and 90 fields pass (431 with the 16 KiB and 64 of before)
cookie=$(head -c 20000 /dev/zero | tr '\0' c)
fields=()
for i in $(seq 1 90); do fields+=(-H "x-f$i: v"); done
t_eq "a 20 KB cookie and 90 header fields over HTTP/2: answered by the backend, not 431" \
	"$(h2curl -o /dev/null -w '%{http_code}' -H "cookie: k=$cookie" "http://$WEB/id") $(h2curl -o /dev/null -w '%{http_code}' "${fields[@]}" "http://$WEB/id")" "200 200"
t_eq "/canary/ goes to v2 (5 requests)" \
	"$(for i in 1 2 3 4 5; do h2curl "http://$WEB/canary/id"; done | sort | uniq -c | awk '{ print $1 $2 }')" "5v2"
t_eq "header x-canary: yes goes to v2 (5 requests)" \
	"$(for i in 1 2 3 4 5; do h2curl -H 'x-canary: yes' "http://$WEB/id"; done | sort | uniq -c | awk '{ print $1 $2 }')" "5v2"
# 40 streams on ONE connection (nghttp: one connection, every URL a
# stream), each routed on its own: weights 1:1, /v1only/ to v1
urls=()
for i in $(seq 1 40); do urls+=("http://$WEB/id?n=$i"); done
in_c nghttp "${urls[@]}" >"$T/split.out" 2>&1
v1=$(grep -cx v1 "$T/split.out")
t_eq "40 streams on one connection: all answered" "$(grep -cx 'v[12]' "$T/split.out")" 40
t_range "...by weight 1:1: v1 answered" "$v1" 8 32
urls=()
for i in $(seq 1 20); do urls+=("http://$WEB/canary/id?n=$i" "http://$WEB/v1only/id?n=$i"); done
in_c nghttp "${urls[@]}" >"$T/mixed.out" 2>&1
t_eq "20 /canary/ and 20 /v1only/ streams on one connection: 20 v2, 20 v1" \
	"$(grep -cx v2 "$T/mixed.out") $(grep -cx v1 "$T/mixed.out")" "20 20"
# 2. h2load: many streams, several connections
in_c h2load -n 2000 -c 4 -m 16 "http://$WEB/id" >"$T/h2load.out" 2>&1
t_check "h2load: 2000 requests, 2000 succeeded" grep -q 'requests: 2000 total, 2000 started, 2000 done, 2000 succeeded' "$T/h2load.out"
t_check "h2load: all 2xx" grep -q 'status codes: 2000 2xx' "$T/h2load.out"
fp_web() { "$CTL" stats -o json | jq -c '.services[] | select(.name == "web") | .fastpath | [.paired, .redirected_msgs > 0]'; }
t_check "the clients' connections to the helper were fast-path pairs ($(fp_web))" \
	jq -e '.[0] >= 4 and .[1]' <<<"$(fp_web)"
# the streams of all client connections share the helper's backend
# connections (docs/design.md decision 46): at most 4 per backend per
# worker (2), however many clients, and they outlive the clients (closed
# after --idle-timeout-ms); per client connection they would be gone
for h in b1 b2; do
	t_range "backend connections to $h after the 4 clients left: shared, at most 4 per worker" \
		"$(dmsc_net_exec "$h" ss -Htn state established '( sport = :8080 )' | wc -l)" 1 8
done
# (after the count above: another service has backend connections of its own)
# affinity "client" (decision 97): 40 streams of one client, weights 1:1,
# all on one backend (by chance: one time in 2^39)
urls=()
for i in $(seq 1 40); do urls+=("http://$STICKY/id?n=$i"); done
in_c nghttp "${urls[@]}" >"$T/sticky.out" 2>&1
t_eq "affinity client: 40 streams on one connection, all answered by one backend" \
	"$(sort "$T/sticky.out" | uniq -c | awk '{ print $1 }' | sort -n | tail -1) $(grep -cx 'v[12]' "$T/sticky.out")" "40 40"
# affinity by header and by cookie (decision 98): 16 users of one client,
# each a connection of 5 streams: each user on one backend, the users on
# both (client affinity would put them all on one). HTTP/2 may carry the
# cookies in fields of their own (RFC 9113 8.2.3): nghttp sends two.
for by in h c; do
	one=0 seen=""
	for i in $(seq 1 16); do
		if [[ $by == h ]]; then
			in_c nghttp -H "x-user: user$i" "http://$STICKY_H/id?n="{1..5} >"$T/by$i.out" 2>&1
		else
			in_c nghttp -H "cookie: theme=dark" -H "cookie: session=s$i" \
				"http://$STICKY_C/id?n="{1..5} >"$T/by$i.out" 2>&1
		fi
		[[ $(grep -x 'v[12]' "$T/by$i.out" | sort | uniq -c | awk '{ print $1 }') == 5 ]] && ((one++))
		seen+=" $(grep -x 'v[12]' "$T/by$i.out" | sort -u | tr '\n' ' ')"
	done
	what=header
	[[ $by == c ]] && what="cookie (two fields)"
	t_eq "affinity by $what: each of 16 users' 5 streams answered by one backend" "$one" 16
	t_eq "affinity by $what: the 16 users are spread over both backends" \
		"$(tr ' ' '\n' <<<"$seen" | sort -u | grep -c .)" 2
done

# 3. request limits per stream: burst 5, then 429
in_c h2load -n 20 -c 1 -m 1 "http://$LIMITED/id" >"$T/limited.out" 2>&1
t_check "requests_per_second 1 burst 5: 20 streams -> 5 2xx, 15 4xx (429)" \
	grep -q 'status codes: [56] 2xx, 0 3xx, 1[45] 4xx, 0 5xx' "$T/limited.out"

# 4. timeout per stream: 504 after timeout_ms
t_eq "a backend that never answers: 504 after timeout_ms" \
	"$(h2curl -o /dev/null -w '%{http_code}' "http://$SLOW/x")" 504

# a gRPC deadline shorter than the route's (15 s by default) wins: the
# helper answers 504 before nghttp gives up after 5 s
t_eq "grpc-timeout: 300m on a backend that never answers: 504 from the helper" \
	"$(in_c nghttp -v --timeout=5 -H 'grpc-timeout: 300m' "http://$SILENT/x" 2>&1 |
		awk '/recv \(stream_id=[0-9]+\) :status:/ { print $NF }')" 504

# 5. retries: a refused backend is retried elsewhere
ok=0
for i in $(seq 1 10); do [[ $(h2curl "http://$RETRY/id") == v1 ]] && ok=$((ok + 1)); done
t_eq "retries: 2: all 10 succeed although one backend refuses" "$ok" 10
n502=0
for i in $(seq 1 20); do [[ $(h2curl -o /dev/null -w '%{http_code}' "http://$RETRY/noretry") == 502 ]] && n502=$((n502 + 1)); done
t_range "retries: 0: some answered 502 (so the retry above did the work)" "$n502" 1 19
# a backend answering 503: an idempotent request (GET; a POST on a route
# marked "idempotent") goes to the other backend, a plain POST does not
codes() { # N METHOD PATH: the status codes of N requests, counted
	for i in $(seq 1 "$1"); do h2curl -o /dev/null -w '%{http_code}\n' -X "$2" "http://$BUSY$3"; done |
		sort | uniq -c | awk '{ printf "%s%s ", $1, $2 }'
}
t_eq "a backend answers 503: 20 GETs all answered 200 by the other (default retries 1)" \
	"$(codes 20 GET /id)" "20200 "
out=$(codes 20 POST /id)
t_range "...20 POSTs: some get the 503 (a POST is not sent twice)" \
	"$(grep -o '[0-9]*503' <<<"$out" | sed 's/503$//')" 1 19
t_eq "...20 POSTs on a route marked \"idempotent\": all answered 200" \
	"$(codes 20 POST /canary/id)" "20200 "

# An answer before the request body was read (a backend's 503, the
# helper's own 502): what the client still sends is acknowledged and
# dropped, so it finishes its upload and reads the answer; without that
# its window stayed shut and curl waited for it until --max-time.
head -c 1000000 /dev/urandom >"$T/body.bin"
post() { h2curl -o /dev/null -w '%{http_code}' --data-binary @"$T/body.bin" "$@"; echo " $?"; }
t_eq "a 1 MB POST to a service with no backend up: 502 at once (curl's exit 0)" \
	"$(post "http://$DEAD/id")" "502 0"
got=$(for i in $(seq 1 16); do post "http://$BUSY/id"; done)
t_eq "16 POSTs of 1 MB to a service one of whose backends answers 503 unread: each ends, curl's exit 0 ($(sort <<<"$got" | uniq -c | awk '{ printf "%s x %s %s; ", $1, $2, $3 }'))" \
	"$(awk '$2 != 0' <<<"$got" | wc -l)" 0
t_check "...and some of them were answered 503 by that backend" grep -qx '503 0' <<<"$got"

# 6. flow control: a slow reader of a 20 MB body does not make the helper
# buffer it (it holds at most the windows it advertises)
hwm0=$(hwm_kb)
in_c curl -sS --http2-prior-knowledge --limit-rate 100k --max-time 4 -o /dev/null "http://$BIG/big" 2>/dev/null
hwm1=$(hwm_kb)
t_range "slow HTTP/2 reader of 20 MB for 4 s: the helper's peak RSS grew less than 4 MB (kB)" \
	"$((hwm1 - hwm0))" 0 4096
t_eq "...and a fast reader gets the whole 20 MB" \
	"$(h2curl -o /dev/null -w '%{size_download}' "http://$BIG/big")" 20000000

# 7. metrics and the access log
t_check "metrics: HTTP/2 streams counted per service, route and code" t_wait 5 \
	grep -q '^dmsc_l7_requests_total{service="web",route="0",code="200"} [1-9]' "$T/metrics.prom"
t_check "access log: a line per stream (proto=h2)" grep -q 'service=web route=0 proto=h2 status=200' "$T/access.log"

# 7b. HTTP/2 connections spread evenly over the workers (docs/design.md
# decision 71): with none open, 20 idle ones held are served 10 and 10 by
# the 2 workers (the kernel's SO_REUSEPORT hash alone splits 20 connections
# 10:10 about one time in 6)
h2split() {
	awk '/^dmsc_l7_h2_connections\{worker="[01]"\}/ { n[$1] = $2 }
		END { print n["dmsc_l7_h2_connections{worker=\"0\"}"] + 0, n["dmsc_l7_h2_connections{worker=\"1\"}"] + 0 }' \
		"$T/metrics.prom"
}
split_is() { [[ $(h2split) == "$1" ]]; }
t_check "metrics: no HTTP/2 connection open on either worker" t_wait 10 split_is "0 0"
mkfifo "$T/spread.in"
in_c python3 "$(dirname "$0")/../lib/h2idle.py" "$WEB" 80 20 30 <"$T/spread.in" >"$T/spread.out" 2>&1 &
exec 8>"$T/spread.in"
t_check "20 idle HTTP/2 connections held" t_wait 30 grep -q '^ready 20$' "$T/spread.out"
t_wait 5 split_is "10 10"
t_eq "...served 10 and 10 by the 2 workers" "$(h2split)" "10 10"
exec 8>&-
t_check "...and closed with their client" t_wait 10 split_is "0 0"
t_check "dmsc-l7 still running" kill -0 "$L7PID"
kill -TERM "$L7PID"
wait "$L7PID"
t_eq "SIGTERM: the helper drains and exits 0" "$?" 0
L7PID=

# 8. --max-conns counts HTTP/2 connections: one worker, at most 2; with 2
# idle HTTP/2 connections open a third is closed unanswered. --no-netns
# (as scripts/bench-h2.sh runs it): its drain below.
GLIBC_TUNABLES=glibc.malloc.tcache_count=7 \
	ip netns exec "${P}n" "$BIN/dmsc-l7" --listen 198.18.0.1:15001 --policy "$T/policy.json" \
	--workers 1 --max-conns 2 --no-netns --metrics-file "$T/m2.prom" >"$T/l7b.out" 2>"$T/l7b.err" &
L7PID=$!
dmsc_wait_ready "$T/l7b.out" 10 || { t_fail "dmsc-l7 --max-conns 2 ready"; cat "$T/l7b.err"; t_summary; exit 1; }
t_eq "a cache size the user set (glibc's 7) is left as it is" "$(tcache_of "$L7PID")" 7
mkfifo "$T/idle.in"
in_c python3 "$(dirname "$0")/../lib/h2idle.py" "$WEB" 80 2 30 <"$T/idle.in" >"$T/idle.out" 2>&1 &
exec 7>"$T/idle.in"
t_check "two idle HTTP/2 connections held" t_wait 30 grep -q '^ready 2$' "$T/idle.out"
t_eq "--max-conns 2: a third HTTP/2 connection is closed unanswered" \
	"$(in_c curl -s --http2-prior-knowledge --max-time 5 -o /dev/null -w '%{http_code}' "http://$WEB/id")" 000
t_check "...counted as over_capacity" t_wait 5 \
	grep -q '^dmsc_l7_refused_connections_total{reason="over_capacity"} [1-9]' "$T/m2.prom"
exec 7>&-
ok200() { [[ $(h2curl -o /dev/null -w '%{http_code}' "http://$WEB/id") == 200 ]]; }
t_check "...and served once the idle ones closed" t_wait 10 ok200

# 9. SIGTERM with an idle HTTP/2 connection and a stream in flight (1 MB
# read at 500 kB/s) on the --no-netns helper: it exits 0 (no crash), and
# the GOAWAY's drain lets the stream finish (once the connections above
# are gone: --max-conns 2)
l7idle() { [[ -z $(dmsc_net_exec n ss -Htn state established '( sport = :15001 )') ]]; }
t_check "the helper holds no connection" t_wait 10 l7idle
in_c python3 "$(dirname "$0")/../lib/h2idle.py" "$WEB" 80 1 30 <"$T/idle.in" >"$T/idle1.out" 2>&1 &
exec 7>"$T/idle.in"
t_check "an idle HTTP/2 connection held" t_wait 30 grep -q '^ready 1$' "$T/idle1.out"
in_c curl -sS --http2-prior-knowledge --limit-rate 500k --max-time 20 -o "$T/mid.out" \
	-w '%{http_version} %{http_code} %{size_download}' "http://$WEB/mid" >"$T/mid.code" 2>&1 &
MIDPID=$!
t_check "...and a stream in flight" t_wait 10 test -s "$T/mid.out"
kill -TERM "$L7PID"
wait "$L7PID"
t_eq "SIGTERM (--no-netns, idle connection, stream in flight): exits 0" "$?" 0
L7PID=
wait "$MIDPID"
t_eq "...the stream in flight finished whole" "$? $(cat "$T/mid.code")" "0 2 200 1000000"
exec 7>&-
t_check "uninstall" "$CTL" uninstall
t_summary
