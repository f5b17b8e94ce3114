#!/usr/bin/env bash
# dmsc-l7 under misbehaving backends and clients, and its supervision by
# dmscd (issue 10, items 1-6 and 13): pooled backend connections that the
# backend wrote to or closed, retries after a 503 then silence, input after
# a half-close, one client holding many connections, HTTP/1.0 and hop-by-hop
# headers, the loop guard a workload cannot forge, and dmscd handing the
# helper exactly the policy it applied. Backends that misbehave on purpose
# are tests/tools/l7-backend.py; raw clients tests/tools/l7-client.py.
set -u
. "$(cd "$(dirname "$0")/../lib" && pwd)/kernel.sh"
L7PID= DPID=
suite_cleanup() { [[ -n $L7PID ]] && kill -TERM "$L7PID" 2>/dev/null; dmsc_stop TERM "$DPID"; }
dmsc_suite_begin l7robust dr7$$
PY=/usr/bin/python3
if [[ ! -x $PY ]]; then
	echo "skip - no /usr/bin/python3 for the test backends"
	exit 77
fi
TOOLS=$TOP/tests/tools
HELPER=198.18.0.1:15001
WEB=198.19.0.20
LIMITED=198.19.0.24
STALE=198.19.0.30
LATE=198.19.0.31
SILENT=198.19.0.32
UPLOAD=198.19.0.33
ECHO=198.19.0.34
GUARDED=198.19.0.35
SHORT=198.19.0.36
SLOW=198.19.0.40
dmsc_net_hosts c=198.18.0.2/16 c2=198.18.0.3/16 n=198.18.0.1/16 || exit 1
i=2
for h in b1 b2 slow; do
	dmsc_net_host "$h" "198.18.1.$i/16" || exit 1
	i=$((i + 1))
done
i=10
for h in stale late silent upload echo; do
	dmsc_net_host "$h" "198.18.1.$i/16" || exit 1
	i=$((i + 1))
done
dmsc_cgroups MESH=mesh INSIDE=mesh/in || exit 1

dmsc_testsrv b1 v1 http 198.18.1.2:8080 600 "$T/v1.out"
dmsc_testsrv b2 v2 http 198.18.1.3:8080 600 "$T/v2.out"
dmsc_net_exec slow "$SRV" --name slow --mode http --listen 198.18.1.4:8080 --delay-ms 8000 --log-requests \
	--max-seconds 600 >"$T/slow.out" 2>&1 &
pyback() { # HOST ADDR MODE [PORT]
	dmsc_net_exec "$1" "$PY" "$TOOLS/l7-backend.py" --listen "$2:${4:-8080}" --mode "$3" \
		--max-seconds 600 >"$T/$3${4:-}.out" 2>&1 &
}
pyback stale 198.18.1.10 stale
pyback stale 198.18.1.10 stale 8081 # its own pool: the short Content-Length case
pyback late 198.18.1.11 late408
pyback silent 198.18.1.12 503silent
pyback upload 198.18.1.13 slowread
pyback echo 198.18.1.14 echohead
dmsc_backends_ready "$T"/{v1,v2,slow,stale,stale8081,late408,503silent,slowread,echohead}.out

cat >"$T/policy.json" <<JSON
{ "services": [
  $(dmsc_json_http web "$WEB" "198.18.1.2:8080,100,v1 198.18.1.3:8080,1,v2" \
	'"routes": [ { "match": { "path_prefix": "/v2/" }, "backends": { "version": "v2" } } ]'),
  $(dmsc_json_http limited "$LIMITED" 198.18.1.2:8080 '"rate_limit": { "requests_per_second": 1, "burst": 2 }'),
  $(dmsc_json_http stalesvc "$STALE" 198.18.1.10:8080),
  $(dmsc_json_http shortsvc "$SHORT" 198.18.1.10:8081),
  $(dmsc_json_http latesvc "$LATE" 198.18.1.11:8080),
  $(dmsc_json_http silentsvc "$SILENT" 198.18.1.12:8080 \
	'"routes": [ { "match": { "path_prefix": "/" }, "timeout_ms": 1000, "retries": 1 } ]'),
  $(dmsc_json_http uploadsvc "$UPLOAD" 198.18.1.13:8080),
  $(dmsc_json_http echosvc "$ECHO" 198.18.1.14:8080),
  $(dmsc_json_http guarded "$GUARDED" 198.18.1.2:8080 "\"allow_from\": [ \"dmsc-test/$P/mesh/in\" ]") ] }
JSON

t_check "install on the test cgroup" "$CTL" install --cgroup "$MESH"
t_check "apply a policy with http services" "$CTL" apply "$T/policy.json"

# One worker: every request meets the same pool of backend connections.
# --max-conns 1024: it holds 1024, so its default bound per client is 512
# (item 5 below; docs/design.md decision 93).
bash -c 'echo $$ >"$1/cgroup.procs" && exec ip netns exec "$2" "${@:3}"' _ "$MESH" "${P}n" \
	"$L7" --listen "$HELPER" --policy "$T/policy.json" --workers 1 --max-conns 1024 \
	--head-timeout-ms 1000 --default-retries 0 --drain-ms 2000 \
	--access-log "$T/access.log" >"$T/l7.out" 2>"$T/l7.err" &
L7PID=$!
dmsc_wait_ready "$T/l7.out" 10 || { t_fail "dmsc-l7 ready"; cat "$T/l7.err"; t_summary; exit 1; }
t_ok "dmsc-l7 starts and says ready"

# raw FROM VIP [l7-client.py raw options]: the bytes a raw client got back.
raw() {
	local from=$1 vip=$2
	shift 2
	dmsc_run_in_cgroup "$MESH" dmsc_net_exec "$from" "$PY" "$TOOLS/l7-client.py" raw "$vip:80" "$@"
}
req() { # FILE CONTENT(printf format)
	# shellcheck disable=SC2059
	printf "$2" >"$1"
}
body_of() { # the body of the first response in a raw capture
	awk 'BEGIN { RS = "\r\n\r\n" } NR == 2 { print; exit }' "$1" | head -n 1
}
# No helper connection to ADDR is idle with nothing to read: the one that
# was pooled has been closed, or it holds unread bytes (the defect).
no_quiet_conn_to() {
	! dmsc_net_exec n ss -Htn dst "$1" | awk '$1 == "ESTAB" && $2 == 0' | grep -q .
}
no_conn_to() {
	! dmsc_net_exec n ss -Htn state established dst "$1" | grep -q .
}

# ---- item 1: a pooled connection that has something to read, or was
# closed, never carries a request; idle ones expire.
req "$T/head.txt" 'HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
req "$T/bob.txt" 'GET /user-bob HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
raw c "$STALE" --file "$T/head.txt" --timeout 5 >"$T/head.out"
t_check "HEAD answered 200" grep -q '^HTTP/1.1 200' "$T/head.out"
t_wait 5 grep -q stale-sent "$T/stale.out"
t_wait 5 no_quiet_conn_to 198.18.1.10:8080
raw c "$STALE" --file "$T/bob.txt" --timeout 5 >"$T/bob.out"
t_eq "a body sent after a HEAD answer never reaches the next client" "$(body_of "$T/bob.out")" /user-bob
req "$T/short.txt" 'GET /short HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
raw c "$SHORT" --file "$T/short.txt" --timeout 5 >"$T/short.out"
t_wait 5 grep -q stale-sent "$T/stale8081.out"
t_wait 5 no_quiet_conn_to 198.18.1.10:8081
raw c "$SHORT" --file "$T/bob.txt" --timeout 5 >"$T/bob2.out"
t_eq "bytes past a short Content-Length never reach the next client" "$(body_of "$T/bob2.out")" /user-bob
req "$T/a.txt" 'GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
req "$T/b.txt" 'GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
raw c "$LATE" --file "$T/a.txt" --timeout 5 >"$T/a.out"
t_wait 5 grep -q 408-sent "$T/late408.out"
t_wait 5 no_quiet_conn_to 198.18.1.11
raw c "$LATE" --file "$T/b.txt" --timeout 5 >"$T/b.out"
t_eq "a late 408 on an idle pooled connection never reaches the next client" \
	"$(head -n 1 "$T/b.out" | tr -d '\r')" "HTTP/1.1 200 OK"
t_eq "... which gets its own answer" "$(body_of "$T/b.out")" /b
curl_c() { dmsc_run_in_cgroup "$MESH" dmsc_net_exec c curl -sS --max-time 5 "$@"; }
curl_c -o /dev/null "http://$WEB/x"
t_check "an idle pooled backend connection is closed after --pool-idle-ms (4 s)" \
	t_wait 10 no_conn_to 198.18.1.2

# ---- item 3: every retry has its deadline.
req "$T/silent.txt" 'GET /s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
raw c "$SILENT" --file "$T/silent.txt" --timeout 8 >"$T/silent.out"
t_eq "503 then silence (retries 1, timeout_ms 1000): the client gets a 504" \
	"$(head -n 1 "$T/silent.out" | tr -d '\r')" "HTTP/1.1 504 Gateway Timeout"
# the helper's own time for it (its access log), not the client's, whose
# start in the namespace takes seconds on a loaded machine
t_wait 5 grep -q '"GET /s" status=504' "$T/access.log"
ms=$(grep '"GET /s" status=504' "$T/access.log" | tail -n 1 | sed -E 's/.* ms=([0-9]+).*/\1/')
t_range "... within the retry's timeout (the helper's access log, ms)" "${ms:-0}" 900 4000

# ---- item 4: input after a half-close.
for ((i = 0; i < 600; i++)); do printf 'GET /v2/p%d HTTP/1.1\r\nHost: x\r\n\r\n' "$i"; done >"$T/600.txt"
raw c "$WEB" --file "$T/600.txt" --shut --timeout 20 >"$T/600.out"
t_eq "600 pipelined GETs then shutdown(SHUT_WR): 600 answers" \
	"$(grep -ac '^HTTP/1.1 200' "$T/600.out")" 600
req "$T/up.txt" 'POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n'
raw c "$UPLOAD" --file "$T/up.txt" --body-bytes 4194304 --shut --timeout 30 >"$T/up.out"
t_eq "a 4 MiB upload under back-pressure, then shutdown(SHUT_WR): complete" \
	"$(body_of "$T/up.out")" "got 4194304"

# ---- item 6: HTTP correctness.
req "$T/hop.txt" 'GET /e HTTP/1.1\r\nHost: x\r\nConnection: X-Secret, keep-alive\r\nX-Secret: s3cret\r\nKeep-Alive: timeout=9\r\nX-Kept: 1\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n'
raw c "$ECHO" --file "$T/hop.txt" --timeout 3 >"$T/hop.out"
t_check "a field named in Connection is not forwarded" bash -c "! grep -qi 's3cret' '$T/hop.out'"
t_check "Keep-Alive is not forwarded" bash -c "! grep -qi 'timeout=9' '$T/hop.out'"
t_check "an end-to-end field is forwarded" grep -qi '^X-Kept: 1' "$T/hop.out"
t_check "X-Forwarded-For gets the client's address appended" \
	grep -qi '^X-Forwarded-For: 203.0.113.9, 198.18.0.2' "$T/hop.out"
req "$T/h10.txt" 'GET /ten HTTP/1.0\r\nX-A: b\r\n\r\n'
raw c "$ECHO" --file "$T/h10.txt" --timeout 3 >"$T/h10.out"
t_check "HTTP/1.0 client: no chunked body" bash -c "! grep -qi 'transfer-encoding' '$T/h10.out'"
t_check "HTTP/1.0 client: the body de-chunked (the echoed request line intact)" \
	grep -q '^GET /ten HTTP/1.1' "$T/h10.out"
t_check "HTTP/1.0 client: the response's hop-by-hop fields dropped" \
	bash -c "! grep -qi 'hop-secret' '$T/h10.out' && grep -qi '^X-End: end' '$T/h10.out'"
t_check "HTTP/1.0 client: Connection: close, and closed" grep -qi '^Connection: close' "$T/h10.out"
t_check "HTTP/1.0 without Host reaches the backend (as 1.1) with the VIP as Host" \
	grep -qi "^Host: $ECHO:80" "$T/h10.out"
# a body with a Content-Length is forwarded behind the rewritten head, to
# its last byte (the head's last byte once went out as the body's first)
req "$T/h10cl.txt" 'GET /x HTTP/1.0\r\n\r\n'
raw c "$WEB" --file "$T/h10cl.txt" --timeout 3 >"$T/h10cl.out"
t_check "HTTP/1.0 client, a Content-Length body: byte-exact" \
	"$PY" -c 'import re, sys
head, body = open(sys.argv[1], "rb").read().split(b"\r\n\r\n", 1)
n = re.search(rb"(?im)^content-length: *(\d+)", head)
sys.exit(not (n and int(n.group(1)) == len(body) and body in (b"v1\n", b"v2\n")))' "$T/h10cl.out"
req "$T/tab.txt" 'GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n'
raw c "$WEB" --file "$T/tab.txt" --timeout 3 >"$T/tab.out"
t_eq "a tab in the request target: 400" "$(head -n 1 "$T/tab.out" | tr -d '\r')" \
	"HTTP/1.1 400 Bad Request"

# ---- item 13: a socket mark is no way around the helper.
MARK=0x646d7363
req "$T/v2.txt" 'GET /v2/m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
got=
for ((i = 0; i < 10; i++)); do
	got+="$(raw c "$WEB" --mark "$MARK" --file "$T/v2.txt" --timeout 3 | body_of /dev/stdin) "
done
t_eq "a socket marked $MARK from the mesh cgroup is still handed to the helper (route /v2/)" \
	"$got" "v2 v2 v2 v2 v2 v2 v2 v2 v2 v2 "
{
	for ((i = 0; i < 5; i++)); do printf 'GET /l HTTP/1.1\r\nHost: x\r\n\r\n'; done
	printf 'GET /l HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
} >"$T/lim.txt"
got=$(raw c "$LIMITED" --mark "$MARK" --file "$T/lim.txt" --timeout 3 | grep -a '^HTTP/1.1' | awk '{ print $2 }' | tr '\n' ' ')
t_check "... and its requests are limited (requests_per_second 1, burst 2: 429s among 6 pipelined: $got)" \
	grep -q '^200 200 .*429' <<<"$got"
got=$(dmsc_run_in_cgroup "$MESH" dmsc_net_exec c "$PY" "$TOOLS/l7-client.py" raw "$GUARDED:80" \
	--mark "$MARK" --file "$T/v2.txt" --timeout 3 2>&1)
t_eq "... and allow_from still refuses it outside the allowed cgroup" "$got" "connect: EPERM"
got=$(dmsc_run_in_cgroup "$INSIDE" dmsc_net_exec c "$PY" "$TOOLS/l7-client.py" raw "$GUARDED:80" \
	--mark "$MARK" --file "$T/v2.txt" --timeout 3 | body_of /dev/stdin)
t_eq "... and lets it in from the allowed one" "$got" v1

# ---- item 5: one client address cannot take every connection (by default
# half of what the helper holds: 512 of --max-conns 1024 here).
t_check "the helper logs its bound: 512 connections per client" \
	grep -q 'with 1 workers, up to 512 connections per client' "$T/l7.err"
coproc HOLD { dmsc_run_in_cgroup "$MESH" dmsc_net_exec c "$PY" "$TOOLS/l7-client.py" hold "$WEB:80" --count 512 --seconds 60; }
read -r -t 30 held <&"${HOLD[0]}"
t_eq "one client holds 512 idle connections" "$held" "held 512"
req "$T/one.txt" 'GET /v2/one HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
raw c "$WEB" --file "$T/one.txt" --timeout 3 >"$T/over.out"
t_eq "its next connection gets a 503 at once" "$(head -n 1 "$T/over.out" | tr -d '\r')" \
	"HTTP/1.1 503 Service Unavailable"
raw c2 "$WEB" --file "$T/one.txt" --timeout 3 >"$T/c2.out"
t_eq "another client is served meanwhile" "$(body_of "$T/c2.out")" v2
exec {HOLD[1]}>&-
wait "$HOLD_PID" 2>/dev/null
got=
for ((i = 0; i < 50; i++)); do
	got=$(raw c "$WEB" --file "$T/one.txt" --timeout 3 | body_of /dev/stdin)
	[[ $got == v2 ]] && break
	sleep 0.1
done
t_eq "once they are closed, the client is served again" "$got" v2
t_check "dmsc-l7 still running" kill -0 "$L7PID"
kill -TERM "$L7PID"
wait "$L7PID"
L7PID=

# ---- item 2: dmscd hands the helper exactly the policy it applied.
# (DRATE: web's requests_per_second and burst; DSLOW_MS: slowsvc's timeout)
dpolicy() { # SELECTOR [WEIGHT]: the /r/ route's version, v2's weight (default 1)
	local rate=
	[[ -n ${DRATE:-} ]] &&
		rate="\"rate_limit\": { \"requests_per_second\": $DRATE, \"burst\": $DRATE },"
	cat >"$T/d.tmp" <<JSON
{ "services": [
  { "name": "web", "vip": "$WEB", "port": 80, "protocol": "http",
    $rate
    "backends": [
      { "address": "198.18.1.2", "port": 8080, "labels": { "version": "v1" } },
      { "address": "198.18.1.3", "port": 8080, "weight": ${2:-1}, "labels": { "version": "v2" } } ],
    "routes": [ { "match": { "path_prefix": "/r/" }, "backends": { "version": "$1" } } ] },
  { "name": "slowsvc", "vip": "$SLOW", "port": 80, "protocol": "http",
    "backends": [ { "address": "198.18.1.4", "port": 8080 } ],
    "routes": [ { "match": { "path_prefix": "/" }, "timeout_ms": ${DSLOW_MS:-20000} } ] } ] }
JSON
	mv "$T/d.tmp" "$T/d.json"
}
routes_to() { [[ $(curl_c "http://$WEB/r/x" 2>/dev/null) == "$1" ]]; }
# The helper of dmscd $DPID serves: it writes its metrics file once ready
# (a route check alone could pass at L4 by chance before it is up).
helper_up() { [[ -f /run/dmsc/dmsc-l7.$DPID.prom ]]; }
l7_pid() { pgrep -f -- "--metrics-file /run/dmsc/dmsc-l7.$1.prom" | head -n 1; }
start_dmscd() {
	nsenter --net="/run/netns/${P}n" "$BIN/dmscd" --policy "$T/d.json" --l7-listen "$HELPER" \
		--metrics off --debounce-ms 100 --debounce-max-ms 300 >>"$T/dmscd.log" 2>&1 &
	DPID=$!
	t_wait 20 helper_up || t_fail "dmscd $DPID: its helper up"
}
dpolicy v2
start_dmscd
t_check "dmscd starts the helper: /r/ goes to v2" t_wait 10 routes_to v2
dpolicy v1
t_check "a change of routes alone (no kernel map changes) reaches the helper" t_wait 10 routes_to v1
pid=$(l7_pid "$DPID")
t_check "the helper's command line does not name the user's file" \
	bash -c "[[ -n '$pid' ]] && ! tr '\\0' ' ' </proc/${pid:-0}/cmdline | grep -q '$T/d.json'"
echo '{ "services": [ broken' >"$T/d.json"
t_wait 5 grep -q 'not applied' "$T/dmscd.log"
[[ -n $pid ]] && kill -KILL "$pid"
new_helper() { local p; p=$(l7_pid "$DPID"); [[ -n $p && $p != "$1" ]]; }
t_check "a helper killed after the file went bad is restarted" t_wait 10 new_helper "${pid:-0}"
t_check "... and runs the policy applied (v1), not the file" t_wait 10 routes_to v1
# A replace asked for while the last hand-over drains is done after it
# (a dmscd of its own, so that this case does not hang on the one above).
kill -TERM "$DPID"
wait "$DPID"
dpolicy v1
start_dmscd
t_check "dmscd started again: /r/ goes to v1" t_wait 10 routes_to v1
curl_c --max-time 20 -o "$T/slowreq.out" "http://$SLOW/hold" &
SLOWREQ=$!
t_check "a slow request (8 s) is in flight through the helper" t_wait 5 grep -q '^request' "$T/slow.out"
# Both changes write a kernel map too (a weight), so that a dmscd that
# replaced its helper only on map writes would try both.
n0=$(grep -c 'replaced by' "$T/dmscd.log")
dpolicy v2 2
t_check "a change: the hand-over starts (the old helper drains the slow request)" \
	t_wait 10 bash -c "[[ \$(grep -c 'replaced by' '$T/dmscd.log') -gt $n0 ]]"
t_check "... and the new helper serves it (v2)" t_wait 10 routes_to v2
dpolicy v1 3
t_check "a change during that drain is queued and done after it (v1)" t_wait 20 routes_to v1
wait "$SLOWREQ"
t_eq "the request in flight during both hand-overs is answered" "$(cat "$T/slowreq.out")" slow
# Keep-alive clients across hand-overs (decision 84): a draining helper
# says "Connection: close" with the next response on each connection and
# closes only those idle for a second, so a client that keeps its
# connections (wrk) sees no error across three changes of routes; a
# helper that closed them after a keep-alive answer failed some requests
# with each change.
handovers() { grep -c 'replaced by' "$T/dmscd.log"; }
handed_over() { [[ $(handovers) -gt $1 ]]; } # N: more hand-overs than N
dmsc_run_in_cgroup "$MESH" dmsc_net_exec c wrk -t1 -c8 -d12s --timeout 5s "http://$WEB/x" \
	>"$T/wrk.out" 2>&1 &
WRK=$!
n=0
for sel in v2 v1 v2; do
	n0=$(handovers)
	dpolicy "$sel" 3
	t_wait 10 handed_over "$n0" || break
	n=$((n + 1))
done
t_check "three hand-overs while wrk keeps 8 connections busy" \
	bash -c "kill -0 $WRK && [[ $n == 3 ]]"
wait "$WRK"
t_check "... wrk answered throughout, no socket error, no non-2xx" \
	bash -c "grep -q 'requests in' '$T/wrk.out' && ! grep -Eq 'Socket errors|Non-2xx' '$T/wrk.out'"
# A change of weights alone is taken in place by the running helper
# (decision 85): no hand-over, every connection kept, an idle keep-alive
# one too (a drain would close it after a second idle).
taken() { grep -c 'taken in place: the weights, timeouts' "$T/dmscd.log"; }
taken_more() { [[ $(taken) -gt $1 ]]; }
pid=$(l7_pid "$DPID")
n0=$(handovers)
t0=$(taken)
dmsc_run_in_cgroup "$MESH" dmsc_net_exec c "$PY" "$TOOLS/l7-client.py" keep "$WEB:80" \
	--marker v --seconds 8 >"$T/keep.out" 2>&1 &
KEEP=$!
t_wait 5 grep -q answered "$T/keep.out"
dmsc_run_in_cgroup "$MESH" dmsc_net_exec c wrk -t1 -c8 -d6s --timeout 5s "http://$WEB/x" \
	>"$T/wrk2.out" 2>&1 &
WRK=$!
n=0
for weight in 0 2 0; do
	t=$(taken)
	dpolicy v2 "$weight"
	t_wait 10 taken_more "$t" || break
	n=$((n + 1))
done
t_check "three changes of weights taken in place, no hand-over" \
	bash -c "[[ $n == 3 && $(taken) == $((t0 + 3)) && $(handovers) == $n0 ]]"
t_check "... by the helper that ran before them" test "$(l7_pid "$DPID")" == "$pid"
t_check "... while the kept-alive connection still waits" \
	bash -c "grep -q answered '$T/keep.out' && ! grep -Eq '^(open|closed|reset)' '$T/keep.out'"
got=
for ((i = 0; i < 20; i++)); do got+="$(curl_c "http://$WEB/x") "; done
t_eq "v2 at weight 0: every request to v1" "$got" "$(for ((i = 0; i < 20; i++)); do printf 'v1 '; done)"
wait "$WRK"
t_check "... wrk across them: no socket error, no non-2xx" \
	bash -c "grep -q 'requests in' '$T/wrk2.out' && ! grep -Eq 'Socket errors|Non-2xx' '$T/wrk2.out'"
wait "$KEEP"
t_eq "the kept-alive connection was never closed" "$(tail -n 1 "$T/keep.out")" open
t_check "dmsc_l7_policy_updates_total counts them" t_wait 5 \
	grep -q '^dmsc_l7_policy_updates_total{result="taken"} 3$' "/run/dmsc/dmsc-l7.$DPID.prom"
# A request limit set, then lifted, and a route's timeout, in place too.
codes_web() { for ((i = 0; i < 20; i++)); do curl_c -o /dev/null -w '%{http_code}\n' "http://$WEB/x"; done; }
t=$(taken)
DRATE=2 dpolicy v2 0
t_check "a request limit (2/s) taken in place" t_wait 10 taken_more "$t"
n429=$(codes_web | grep -c '^429$')
t_check "... 20 requests at once: the limit answers 429 (got $n429)" test "$n429" -ge 10
t=$(taken)
dpolicy v2 0
t_check "the limit lifted in place" t_wait 10 taken_more "$t"
t_eq "... 20 requests at once: none refused" "$(codes_web | grep -vc '^200$')" 0
t=$(taken)
DSLOW_MS=1000 dpolicy v2 0
t_check "a route's timeout (20 s to 1 s) taken in place" t_wait 10 taken_more "$t"
t_eq "... the 8 s backend's request: 504 after it" \
	"$(curl_c -o /dev/null -w '%{http_code}' "http://$SLOW/late")" 504
t_check "... all by the helper that ran before them, no hand-over" \
	bash -c "[[ $(l7_pid "$DPID") == $pid && $(handovers) == $n0 ]]"
# dmscd restarted, the same binaries and options (docs/design.md decision
# 86): the next dmscd adopts the helper that serves on, so a connection
# open across the restart lives on past the 10 s an orphan's drain would
# give it (and past its 60 s without a successor, were it longer).
dmsc_run_in_cgroup "$MESH" dmsc_net_exec c "$PY" "$TOOLS/l7-client.py" keep "$WEB:80" \
	--marker v --seconds 13 >"$T/keep2.out" 2>&1 &
KEEP=$!
t_wait 5 grep -q answered "$T/keep2.out"
kill -TERM "$DPID"
wait "$DPID"
OLD=$DPID
start_dmscd
t_check "dmscd restarted: it adopts the helper of the one before" \
	t_wait 10 grep -q "dmsc-l7 (pid $pid) of the dmscd before adopted" "$T/dmscd.log"
t_check "... which says so" grep -q "adopted by dmscd (pid $DPID): serving on as its helper" "$T/dmscd.log"
t_check "... and writes the new dmscd's metrics file, the old one's gone" \
	bash -c "kill -0 $pid && [[ -s /run/dmsc/dmsc-l7.$DPID.prom && ! -e /run/dmsc/dmsc-l7.$OLD.prom ]]"
t=$(taken)
dpolicy v2 2
t_check "... and takes the new dmscd's change of weights in place" t_wait 10 taken_more "$t"
t_check "... no hand-over" bash -c "[[ $(handovers) == $n0 ]] && kill -0 $pid"
kill -TERM "$DPID"
wait "$DPID"
OLD=$DPID
start_dmscd
adopted_again() {
	grep -q "adopted by dmscd (pid $DPID)" "$T/dmscd.log" && kill -0 "$pid" &&
		[[ -s /run/dmsc/dmsc-l7.$DPID.prom && ! -e /run/dmsc/dmsc-l7.$OLD.prom ]]
}
t_check "restarted once more: adopted again, the metrics file of the dmscd before gone too" \
	t_wait 10 adopted_again
wait "$KEEP"
t_eq "the kept-alive connection open across the restart was never closed (13 s)" \
	"$(tail -n 1 "$T/keep2.out")" open
kill -TERM "$DPID"
wait "$DPID"
DPID=
# A dmscd that dies leaves no helper behind.
dpolicy v1
start_dmscd
t_check "dmscd started once more: /r/ goes to v1" t_wait 10 routes_to v1
# (the helper it replaced, v2's routes, serves new connections beside the
# new one only until it hears the baton: then it drains and exits; a
# request that met it meanwhile got v2)
t_check "... and the helper it replaced (v2's routes) drained and exited" \
	t_wait 15 bash -c "! kill -0 ${pid:-1} 2>/dev/null"
pid=$(l7_pid "$DPID")
t_check "its helper runs" test -n "$pid"
kill -KILL "$DPID"
wait "$DPID" 2>/dev/null
KILLED=$DPID
DPID=
# its helper outlives it (docs/design.md decision 80) until the next
# dmscd's takes over: nothing is refused in between
t_check "dmscd killed with SIGKILL: its helper serves on" kill -0 "${pid:-1}"
t_check "...and answers (v1)" routes_to v1
dpolicy v2
start_dmscd
t_check "a new dmscd serves the new policy" t_wait 10 routes_to v2
t_check "... which adopted the killed one's helper first, and replaced it: a change of routes" \
	bash -c "grep -q 'dmsc-l7 (pid $pid) of the dmscd before adopted' '$T/dmscd.log' &&
		grep -q 'dmsc-l7 (pid $pid) could not take the policy in place' '$T/dmscd.log'"
t_check "the helper of the killed dmscd drains once the new one serves" \
	t_wait 15 bash -c "! kill -0 ${pid:-1} 2>/dev/null"
t_check "...and takes its metrics file with it" t_wait 5 test ! -e "/run/dmsc/dmsc-l7.$KILLED.prom"
got=
for ((i = 0; i < 20; i++)); do got+="$(curl_c "http://$WEB/r/x") "; done
t_eq "... alone (20 requests, all v2)" "$got" "$(for ((i = 0; i < 20; i++)); do printf 'v2 '; done)"
kill -TERM "$DPID"
wait "$DPID"
DPID=

t_check "uninstall" "$CTL" uninstall
t_summary
