#!/usr/bin/env bash
# dmsc-l7's passive health on the running kernel (docs/design.md decision
# 35): a backend of an http service that answers 503 leaves the helper's
# rotation after exactly consecutive_failures of them, in the same
# dmsc_be_health entry the kernel uses for tcp services (dmscctl show
# services and the helper's metrics say why); healthy again, it is back
# once its ejection is over; a service whose every backend is out keeps
# them all (panic mode); a backend that does not answer within the route's
# timeout_ms (the client's 504) counts as failing too, for HTTP/1.1 and
# HTTP/2 streams. The same for an IPv6 service (a 503 backend ejected, its
# dmsc_be_health entry and the log bracketed), whose idle backend
# connections are pooled and reused as IPv4 ones. The same ejection by the
# helper dmscd runs, and its counts exact while dmscd writes its verdicts
# of the same backends (decision 53). Clients: curl, in the mesh cgroup.
#
# Addresses: hosts 198.18.150.0/24, 198.18.151.0/24 and 2001:2:150::/64,
# VIPs 198.19.150.0/24 and 2001:2:151::/64.
set -u
. "$(cd "$(dirname "$0")/../lib" && pwd)/kernel.sh"
L7PID=
SLEEPPID=
DPID=
suite_cleanup() {
	[[ -n $L7PID ]] && kill -TERM "$L7PID" 2>/dev/null && wait "$L7PID" 2>/dev/null
	dmsc_stop TERM "$DPID"
	dmsc_stop KILL "$SLEEPPID"
}
dmsc_suite_begin l7-health dlh$$
L7=$BIN/dmsc-l7
HELPER=198.18.150.1:15001
SHOP=198.19.150.10
ALLBAD=198.19.150.11
PAIR=198.19.150.12
BACK=198.19.150.13
SLOW=198.19.150.14
dmsc_net_host c 198.18.150.2/16 || exit 1
dmsc_net_host n 198.18.150.1/16 || exit 1
dmsc_net_host good 198.18.151.2/16 || exit 1
dmsc_net_host bad 198.18.151.3/16 || exit 1
dmsc_net_host bad2 198.18.151.4/16 || exit 1
dmsc_net_host bad3 198.18.151.5/16 || exit 1
dmsc_net_host slow 198.18.151.6/16 || exit 1
dmsc_net_host v6a 198.18.151.7/16 || exit 1
dmsc_net_host v6b 198.18.151.8/16 || exit 1
dmsc_net_addr6 v6a 2001:2:150::21/64 || exit 1
dmsc_net_addr6 v6b 2001:2:150::22/64 || exit 1
dmsc_net_addr6 n 2001:2:150::1/64 || exit 1
MESH=$(dmsc_cgroup_make "$P/mesh") || exit 1
POOL6=2001:2:151::10
SHOP6=2001:2:151::11
PLAIN4=198.19.150.15
HUNG2=198.19.150.16
OWN=198.19.150.17
HAMMER=198.19.150.18

# backend NAME HOST ADDR EXTRA...: dmsc-testsrv http on ADDR:8080
backend() {
	local name=$1 host=$2 addr=$3
	shift 3
	dmsc_net_exec "$host" "$SRV" --name "$name" --mode http --listen "$addr:8080" \
		--max-seconds 600 "$@" >"$T/$name.out" 2>&1 &
	dmsc_wait_ready "$T/$name.out" 10
}
backend good good 198.18.151.2 || { t_fail "backend good ready"; t_summary; exit 1; }
backend bad bad 198.18.151.3 --status 503 || { t_fail "backend bad ready"; t_summary; exit 1; }
backend slow slow 198.18.151.6 --delay-ms 5000 || { t_fail "backend slow ready"; t_summary; exit 1; }
# IPv6 backends (Python, keep-alive): one answers with the port the
# helper's connection came from, one answers 503.
pyback() { # HOST ADDR MODE
	dmsc_net_exec "$1" /usr/bin/python3 "$TOP/tests/tools/l7-backend.py" --listen "[$2]:8080" \
		--mode "$3" --max-seconds 600 >"$T/$1.out" 2>&1 &
	dmsc_wait_ready "$T/$1.out" 10
}
pyback v6a 2001:2:150::21 peerport || { t_fail "backend v6a ready"; t_summary; exit 1; }
pyback v6b 2001:2:150::22 fail || { t_fail "backend v6b ready"; t_summary; exit 1; }
# HTTP/2 backends (h2c) on v6a's and v6b's IPv4 addresses: nghttpd, and
# one that takes streams and never answers them.
mkdir -p "$T/www" && echo h2ok >"$T/www/id"
dmsc_net_exec v6a nghttpd --no-tls -d "$T/www" --address 198.18.151.7 8443 >"$T/h2ok.out" 2>&1 &
dmsc_net_exec v6b /usr/bin/python3 "$TOP/tests/tools/l7-backend.py" --listen 198.18.151.8:8443 \
	--mode h2silent --max-seconds 600 >"$T/h2hung.out" 2>&1 &
dmsc_wait_ready "$T/h2hung.out" 10 || { t_fail "backend h2hung ready"; t_summary; exit 1; }

passive() { # FAILURES BASE_MS MAX_MS [FIELD]: a "health" field of passive checks
	echo "\"health\": { \"passive\": { \"consecutive_failures\": $1, \"base_ejection_ms\": $2," \
		"\"max_ejection_ms\": $3${4:+, $4} } }"
}
TIMEOUT300='"routes": [ { "match": { "path_prefix": "/" }, "timeout_ms": 300 } ]'
cat >"$T/policy.json" <<EOF
{ "services": [
  $(dmsc_json_http shop "$SHOP" "198.18.151.2:8080 198.18.151.3:8080" "$(passive 3 600000 600000)"),
  $(dmsc_json_http allbad "$ALLBAD" 198.18.151.3:8080 "$(passive 2 600000 600000)"),
  $(dmsc_json_http back "$BACK" "198.18.151.2:8080 198.18.151.3:8080" "$(passive 2 1000 60000)"),
  $(dmsc_json_http slow "$SLOW" "198.18.151.2:8080 198.18.151.6:8080" "$TIMEOUT300" \
	"$(passive 2 600000 600000)"),
  $(dmsc_json_http pair "$PAIR" "198.18.151.4:8080 198.18.151.5:8080" \
	"$(passive 2 600000 600000 '"max_ejection_percent": 50')"),
  $(dmsc_json_http plain4 "$PLAIN4" 198.18.151.2:8080),
  $(dmsc_json_http hung2 "$HUNG2" "198.18.151.7:8443 198.18.151.8:8443" "$TIMEOUT300" \
	"$(passive 2 600000 600000)"),
  $(dmsc_json_http pool6 "$POOL6" 2001:2:150::21:8080),
  $(dmsc_json_http shop6 "$SHOP6" "2001:2:150::21:8080 2001:2:150::22:8080" "$(passive 3 600000 600000)") ] }
EOF
t_check "install on the test cgroup" "$CTL" install --cgroup "$MESH"
t_check "apply http services with passive health (no longer refused)" "$CTL" apply "$T/policy.json"
# A mesh process in c: the helper listens there, on [::1] too, where
# connect6 hands IPv6 connections (docs/design.md decision 48). nsenter,
# not ip netns exec, which mounts a /sys without the cgroup2 mount the
# helper looks for the mesh's namespaces under.
dmsc_run_in_cgroup "$MESH" dmsc_net_exec c sleep 600 &
SLEEPPID=$!
nsenter --net="/run/netns/${P}n" "$L7" --listen "$HELPER" --policy "$T/policy.json" --workers 2 \
	--default-retries 0 --metrics-file "$T/metrics.prom" >"$T/l7.out" 2>"$T/l7.err" &
L7PID=$!
dmsc_wait_ready "$T/l7.out" 10 || { t_fail "dmsc-l7 ready"; cat "$T/l7.err"; t_summary; exit 1; }

# codes VIP N: N requests one after the other (one curl, one connection),
# one status code a line.
codes() {
	local urls=() i
	for ((i = 0; i < $2; i++)); do urls+=(-o /dev/null "http://$1/r$i"); done
	dmsc_run_in_cgroup "$MESH" dmsc_net_exec c curl -sS --max-time 20 -w '%{http_code}\n' \
		"${urls[@]}"
}
health() {
	"$CTL" show services -o json |
		jq -r ".services[] | select(.name == \"$1\") | .backends[$2] | $3"
}
metric() {
	awk -v k="$1" 'index($0, k " ") == 1 { print $2 }' "$T/metrics.prom"
}

# 1. 503s: the third in a row ejects the backend, and none follows.
codes "$SHOP" 60 >"$T/codes1"
t_eq "60 requests: all answered" "$(wc -l <"$T/codes1")" 60
t_eq "exactly 3 answered 503 (the third ejected the backend)" "$(grep -c '^503$' "$T/codes1")" 3
t_eq "...and the rest 200" "$(grep -c '^200$' "$T/codes1")" 57
t_eq "show services: the backend is ejected" "$(health shop 1 .health.state)" ejected
t_check "show services says why" bash -c "'$CTL' show services -o json | jq -r '.services[] | select(.name == \"shop\") | .backends[1].health.why' |
	grep -q 'ejected after 3 failures (5xx responses or failed connects, seen by dmsc-l7) in a row until 20'"
t_eq "show services: the other backend is in" "$(health shop 0 .health.state)" in
t_check "the helper logs the ejection" grep -q \
	'health: shop 198.18.151.3:8080 ejected after 3 failures in a row (last: a 5xx response)' "$T/l7.err"
t_check "metrics: one ejection, three 5xx" t_wait 10 bash -c \
	"grep -q '^dmsc_l7_backend_ejections_total{service=\"shop\",backend=\"198.18.151.3:8080\"} 1\$' '$T/metrics.prom' &&
	 grep -q '^dmsc_l7_backend_failures_total{service=\"shop\",backend=\"198.18.151.3:8080\",kind=\"5xx\"} 3\$' '$T/metrics.prom'"
t_eq "metrics: the backend is out" \
	"$(metric 'dmsc_l7_backend_out{service="shop",backend="198.18.151.3:8080"}')" 1

# 1b. Timeouts: a backend that answers after 5 s, past the route's 300 ms,
# costs the client a 504 each time, and the second in a row ejects it.
codes "$SLOW" 20 >"$T/codes-slow"
t_eq "slow: 20 requests, exactly 2 answered 504 (no response within timeout_ms), 18 200" \
	"$(grep -c '^504$' "$T/codes-slow"):$(grep -c '^200$' "$T/codes-slow")" "2:18"
t_eq "slow: the backend is ejected" "$(health slow 1 .health.state)" ejected
t_check "slow: the helper logs why" grep -q \
	'health: slow 198.18.151.6:8080 ejected after 2 failures in a row (last: no response within timeout_ms)' "$T/l7.err"
t_check "slow: metrics count two timeouts" t_wait 10 grep -q \
	'^dmsc_l7_backend_failures_total{service="slow",backend="198.18.151.6:8080",kind="timeout"} 2$' "$T/metrics.prom"

# 1c. The same for HTTP/2 (docs/design.md decision 41): a stream that gets
# no response head within the route's 300 ms is answered 504 and counts
# one failure of its backend; the second in a row ejects it.
h2up() { dmsc_net_exec v6a ss -Htln "sport = :8443" | grep -q .; }
t_check "nghttpd on 198.18.151.7:8443" t_wait 10 h2up
dmsc_run_in_cgroup "$MESH" dmsc_net_exec c h2load -n 12 -c 1 -m 1 "http://$HUNG2/id" >"$T/h2load.out" 2>&1
t_check "hung2 (HTTP/2, 12 streams on one connection): exactly 2 answered 5xx (the 504s of timeout_ms), 10 2xx" \
	grep -q 'status codes: 10 2xx, 0 3xx, 0 4xx, 2 5xx' "$T/h2load.out"
t_eq "hung2: the backend that never answers is ejected" "$(health hung2 1 .health.state)" ejected
t_check "hung2: the helper logs why" grep -q \
	'health: hung2 198.18.151.8:8443 ejected after 2 failures in a row (last: no response within timeout_ms)' "$T/l7.err"
t_check "hung2: metrics count two timeouts, one per 504" t_wait 10 grep -q \
	'^dmsc_l7_backend_failures_total{service="hung2",backend="198.18.151.8:8443",kind="timeout"} 2$' "$T/metrics.prom"

# 2. Healthy again: back once its ejection is over (service "back": 1 s,
# twice as long each time it is ejected again while still answering 503).
codes "$BACK" 20 >"$T/codes-back"
t_check "back: the 503 backend was ejected" t_wait 10 grep -qE \
	'^dmsc_l7_backend_ejections_total\{service="back",backend="198.18.151.3:8080"\} [1-9]' "$T/metrics.prom"
dmsc_net_stop bad
backend bad bad 198.18.151.3 || t_fail "backend bad restarted healthy"
t_check "back in rotation after its ejection" t_wait 60 bash -c \
	"[[ \$('$CTL' show services -o json | jq -r '.services[] | select(.name == \"back\") | .backends[1].health.state') == in ]]"
codes "$BACK" 40 >"$T/codes2"
t_eq "40 requests after: all 200" "$(grep -c '^200$' "$T/codes2")" 40
urls=()
for ((i = 0; i < 30; i++)); do urls+=("http://$BACK/n$i"); done
dmsc_run_in_cgroup "$MESH" dmsc_net_exec c curl -sS --max-time 20 "${urls[@]}" >"$T/names2"
t_check "...and it answers again (30 requests: some by it)" grep -qx bad "$T/names2"

# 2b. max_ejection_percent 50: of two backends answering 503, one is
# ejected and the other stays in.
backend bad2 bad2 198.18.151.4 --status 503 || t_fail "backend bad2 ready"
backend bad3 bad3 198.18.151.5 --status 503 || t_fail "backend bad3 ready"
codes "$PAIR" 20 >"$T/codes-pair"
t_eq "pair: 20 requests, all answered 503 by the backends" "$(grep -c '^503$' "$T/codes-pair")" 20
t_eq "pair: one backend ejected, the other kept in (max_ejection_percent 50)" \
	"$("$CTL" show services -o json | jq -c '[.services[] | select(.name == "pair") | .backends[].health.state] | sort')" \
	'["ejected","in"]'
t_check "pair: the capped runs are counted" t_wait 10 grep -qE \
	'^dmsc_l7_health_ejections_capped_total\{service="pair"\} [1-9]' "$T/metrics.prom"

# 3. Connect failures count too; every backend out is panic mode.
dmsc_net_stop bad
codes "$ALLBAD" 5 >"$T/codes3"
t_eq "allbad: every request fails (502: refused)" "$(grep -c '^502$' "$T/codes3")" 5
t_eq "allbad: its one backend is ejected after 2 failed connects" "$(health allbad 0 .health.state)" ejected
t_check "allbad: panic mode, logged" grep -q 'health: allbad: every backend is out: all are kept (panic mode)' "$T/l7.err"
t_check "allbad: the panic picks are counted (3 after the ejection)" t_wait 10 bash -c \
	"grep -q '^dmsc_l7_health_panic_picks_total{service=\"allbad\"} 3\$' '$T/metrics.prom'"
t_check "allbad: connect failures counted" t_wait 10 grep -q \
	'^dmsc_l7_backend_failures_total{service="allbad",backend="198.18.151.3:8080",kind="connect"} 5$' "$T/metrics.prom"

# 4. IPv6 (items of issue 14): pooled backend connections and passive
# health for an IPv6 backend.
ip6_curl() { # VIP6 N [-o /dev/null] ...: N requests, each on its own connection
	local vip=$1 n=$2 urls=() i
	shift 2
	for ((i = 0; i < n; i++)); do urls+=("$@" "http://[$vip]/r$i"); done
	dmsc_run_in_cgroup "$MESH" dmsc_net_exec c curl -6 -g -sS --max-time 20 \
		-H 'Connection: close' "${urls[@]}"
}
c_ino=$(stat -L -c %i "/run/netns/${P}c")
t_check "the helper listens on [::1] in c's namespace" \
	t_wait 10 grep -q "listening in network namespace $c_ino .* and \[::1\]" "$T/l7.err"
ip6_curl "$POOL6" 12 >"$T/pool6"
t_eq "pool6: 12 requests on 12 client connections, all answered" \
	"$(grep -cE '^[0-9]+$' "$T/pool6")" 12
t_range "... by at most 2 backend connections (one per worker): idle IPv6 ones are pooled" \
	"$(sort -u "$T/pool6" | wc -l)" 1 2
ip6_curl "$SHOP6" 40 -o /dev/null -w '%{http_code}\n' >"$T/codes6"
t_eq "shop6: 40 requests, exactly 3 answered 503 (the third ejected the IPv6 backend), 37 200" \
	"$(grep -c '^503$' "$T/codes6"):$(grep -c '^200$' "$T/codes6")" "3:37"
t_eq "show services: the IPv6 backend is ejected (its dmsc_be_health entry)" \
	"$(health shop6 1 .health.state)" ejected
t_check "the helper logs the ejection, bracketed" grep -q \
	'health: shop6 \[2001:2:150::22\]:8080 ejected after 3 failures in a row (last: a 5xx response)' "$T/l7.err"
t_check "metrics: one ejection, three 5xx, bracketed" t_wait 10 bash -c \
	"grep -q '^dmsc_l7_backend_ejections_total{service=\"shop6\",backend=\"\[2001:2:150::22\]:8080\"} 1\$' '$T/metrics.prom' &&
	 grep -q '^dmsc_l7_backend_failures_total{service=\"shop6\",backend=\"\[2001:2:150::22\]:8080\",kind=\"5xx\"} 3\$' '$T/metrics.prom'"

# 5. By default the bound of connections per client is half of what the
# helper can hold (docs/design.md decision 93): wrk's 600 connections from
# one client at once, more than the 512 the default was, all answered, as
# they would be without dmsc. Then --max-conns-per-client counts each
# client address, IPv6 ones too, in
# the namespace they come from: c's IPv4 clients (127.0.0.1 at its
# 127.77.x.y listener) and its IPv6 ones (::1 at its [::1] listener) are
# two clients. A helper with a bound of 2, one worker.
t_check "the helper logs its bound per client: half of what it can hold, over 600 here" \
	awk 'match($0, /up to [0-9]+ connections per client/) { n = substr($0, RSTART + 6) + 0 } END { exit !(n > 600) }' "$T/l7.err"
dmsc_run_in_cgroup "$MESH" dmsc_net_exec c wrk -t 2 -c 600 -d 2s --timeout 10s "http://$PLAIN4/" >"$T/wrk600.txt" 2>&1
t_eq "wrk -c 600 from one client: every answer 2xx, no socket error (more than 600 requests)" \
	"$(grep -cE 'Non-2xx|Socket errors' "$T/wrk600.txt"):$(awk '/requests in/ { print ($1 > 600) }' "$T/wrk600.txt")" "0:1"
kill -TERM "$L7PID" && wait "$L7PID"
nsenter --net="/run/netns/${P}n" "$L7" --listen "$HELPER" --policy "$T/policy.json" --workers 1 \
	--max-conns-per-client 2 --metrics-file "$T/metrics2.prom" >"$T/l7b.out" 2>"$T/l7b.err" &
L7PID=$!
dmsc_wait_ready "$T/l7b.out" 10 || t_fail "dmsc-l7 (--max-conns-per-client 2) ready"
t_wait 10 grep -q "listening in network namespace $c_ino .* and \[::1\]" "$T/l7b.err"
hold() { # NAME TARGET: 2 idle connections from c, held until $T/NAME.in is closed
	mkfifo "$T/$1.in"
	dmsc_run_in_cgroup "$MESH" dmsc_net_exec c /usr/bin/python3 "$TOP/tests/tools/l7-client.py" \
		hold "$2" --count 2 --seconds 30 <"$T/$1.in" >"$T/$1.out" 2>&1 &
}
code6() { ip6_curl "$POOL6" 1 -o /dev/null -w '%{http_code}'; }
code4() {
	dmsc_run_in_cgroup "$MESH" dmsc_net_exec c curl -sS --max-time 10 -o /dev/null \
		-w '%{http_code}' "http://$PLAIN4/"
}
hold hold4 "$PLAIN4:80"
exec {H4}>"$T/hold4.in"
t_check "c holds 2 IPv4 connections to the helper" t_wait 10 grep -q 'held 2' "$T/hold4.out"
t_eq "a third IPv4 one from c: 503 (its bound)" "$(code4)" 503
t_eq "an IPv6 one from c: answered (another client address)" "$(code6)" 200
hold hold6 "[$POOL6]:80"
exec {H6}>"$T/hold6.in"
t_check "c holds 2 IPv6 connections to the helper" t_wait 10 grep -q 'held 2' "$T/hold6.out"
t_eq "a third IPv6 one from c: 503 (::1's bound)" "$(code6)" 503
exec {H4}>&- {H6}>&-
t_check "metrics: 2 refused for client_limit" t_wait 10 grep -q \
	'^dmsc_l7_refused_connections_total{reason="client_limit"} 2$' "$T/metrics2.prom"

# 6. The helper dmscd runs (not one started by hand): dmscd hands it the
# services' health in its view (a view without it left dmscd's helper with
# no passive health at all). dmscd and its helper run in n; the helper
# listens in c's namespace too, where a mesh process lives.
#  own: a 503 backend is ejected after exactly consecutive_failures.
#  hammer: one writer per field set (docs/design.md decision 53), with the
#  helper as the counter: it counts the 503s of 32 backends in their
#  dmsc_be_health entries while dmscd writes its verdict of the same
#  backends at every probe (tcp, every 100 ms, the shortest interval: 320
#  writes/s). consecutive_failures 1000 keeps the runs short of an
#  ejection; retries 0: one backend answer per client request. A dmscd
#  that wrote the counter's element (as before decision 53) loses the
#  failures counted between its read and its write: with a window of 1 ms
#  about 1 % of them here. Its real window (microseconds) is rarely hit at
#  this rate: the check holds dmscd to never writing the counter's element,
#  it does not reproduce that race.
s6=$SECONDS
kill -TERM "$L7PID" && wait "$L7PID"
L7PID=
dmsc_net_exec bad2 "$SRV" --name own503 --mode http --listen 198.18.151.4:8081 --status 503 \
	--max-seconds 600 >"$T/own503.out" 2>&1 &
dmsc_wait_ready "$T/own503.out" 10 || t_fail "backend own503 ready"
lst=() bes=()
for ((i = 0; i < 32; i++)); do
	lst+=(--listen "198.18.151.5:$((9200 + i))")
	bes+=("198.18.151.5:$((9200 + i))")
done
dmsc_net_exec bad3 /usr/bin/python3 "$TOP/tests/tools/l7-backend.py" "${lst[@]}" --mode fail \
	--max-seconds 600 >"$T/hammer.out" 2>&1 &
dmsc_wait_ready "$T/hammer.out" 10 || t_fail "backend hammer (32 ports) ready"
NORETRY='"routes": [ { "match": { "path_prefix": "/" }, "retries": 0 } ]'
cat >"$T/own.json" <<EOF
{ "services": [
  $(dmsc_json_http own "$OWN" "198.18.151.2:8080 198.18.151.4:8081" "$NORETRY" "$(passive 3 600000 600000)"),
  $(dmsc_json_http hammer "$HAMMER" "${bes[*]}" "$NORETRY" \
	"\"health\": { \"passive\": { \"consecutive_failures\": 1000, \"base_ejection_ms\": 600000,
                             \"max_ejection_ms\": 600000 },
                \"active\": { \"type\": \"tcp\", \"interval_ms\": 100, \"timeout_ms\": 50,
                            \"unhealthy_threshold\": 100, \"healthy_threshold\": 1 } }") ] }
EOF
nsenter --net="/run/netns/${P}n" "$BIN/dmscd" --cgroup "$MESH" --policy "$T/own.json" \
	--l7-listen "$HELPER" --metrics off --debounce-ms 100 >"$T/dmscd.log" 2>&1 &
DPID=$!
OWNPROM=/run/dmsc/dmsc-l7.$DPID.prom
t_check "dmscd's helper is ready" t_wait 30 test -f "$OWNPROM"
t_check "... and listens in c's namespace" \
	t_wait 10 grep -q "listening in network namespace $c_ino" "$T/dmscd.log"
codes "$OWN" 30 >"$T/codes-own"
t_eq "own (dmscd's helper): 30 requests, exactly 3 answered 503 (the third ejected the backend), 27 200" \
	"$(grep -c '^503$' "$T/codes-own"):$(grep -c '^200$' "$T/codes-own")" "3:27"
t_eq "own: show services says the backend is ejected" "$(health own 1 .health.state)" ejected
t_check "own: ... by dmsc-l7, after 3 failures in a row" grep -q \
	'ejected after 3 failures (5xx responses or failed connects, seen by dmsc-l7) in a row' \
	<<<"$(health own 1 .health.why)"
t_check "own: dmscd takes it out of the slot table" t_wait 10 \
	grep -q 'health: own 198.18.151.4:8081 out: ejected by dmsc-l7 after 3 failures' "$T/dmscd.log"
# hsum FIELD: the sum of hammer's backends' health FIELD in show services.
hsum() {
	"$CTL" show services -o json |
		jq "[.services[] | select(.name == \"hammer\") | .backends[].health.$1 // 0] | add // 0"
}
hprobed() {
	[[ $("$CTL" show services -o json | jq '[.services[] | select(.name == "hammer") |
		.backends[] | select(.health.probes > 0)] | length') == 32 ]]
}
hmetric() { # the helper's count of hammer's 5xx is N
	[[ $(awk '/^dmsc_l7_backend_failures_total\{service="hammer",.*kind="5xx"\}/ { s += $NF }
		END { print s + 0 }' "$OWNPROM") == "$1" ]]
}
t_check "dmscd probes hammer's 32 backends" t_wait 20 hprobed
probes0=$(hsum probes)
h0=$SECONDS
HPIDS=()
for k in 1 2; do
	codes "$HAMMER" 1500 >"$T/codes-hammer$k" &
	HPIDS+=($!)
done
wait "${HPIDS[@]}"
n503=$(cat "$T/codes-hammer1" "$T/codes-hammer2" | grep -c '^503$')
counted=$(hsum connect_failures)
writes=$(($(hsum probes) - probes0))
echo "# hammer: $n503 503s in $((SECONDS - h0)) s, the helper counted $counted in dmsc_be_health, dmscd wrote $writes probe results meanwhile"
t_eq "hammer: 3000 requests, all answered 503 by the backends" "$n503" 3000
t_check "hammer: dmscd wrote its verdicts meanwhile (>= 100 probe results)" test "$writes" -ge 100
t_eq "hammer: the helper's count in dmsc_be_health is exactly the 503s" "$counted" 3000
t_check "hammer: ... and so is the count in its metrics" t_wait 10 hmetric 3000
t_eq "hammer: dmscd's verdicts intact: all 32 in, each with its probes counted" \
	"$("$CTL" show services -o json | jq '[.services[] | select(.name == "hammer") | .backends[] |
		select(.health.state == "in" and .health.probes > 0)] | length')" 32
dmsc_stop TERM "$DPID"
DPID=
echo "# [6: $((SECONDS - s6)) s]"

t_summary
