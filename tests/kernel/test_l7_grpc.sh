#!/usr/bin/env bash
# gRPC through dmsc-l7 (HTTP/2, docs/design.md decision 26), with Python's
# grpcio on both ends (generic handlers: raw bytes, no generated code):
# unary, server-streaming and bidirectional calls routed by method and by
# header across two backend versions, by weight otherwise; grpc-status
# carried in the trailers and counted in the metrics. Also the benchmark's
# own gRPC backend (tests/tools/dmsc-grpcsrv, scripts/bench-h2.sh) answering
# the grpcio client directly, so that what the benchmark measures is gRPC.
set -u
. "$(cd "$(dirname "$0")/../lib" && pwd)/kernel.sh"
L7PID=
suite_cleanup() { dmsc_stop TERM "$L7PID"; }
dmsc_suite_begin l7grpc dlg$$
# Debian's python3-grpcio is for Debian's python3 (another python3 may come
# first on PATH)
PY=
for p in python3 /usr/bin/python3; do
	if "$p" -c 'import grpc' 2>/dev/null; then PY=$p; break; fi
done
if [[ -z $PY ]]; then
	echo "skip - python3-grpcio is missing (scripts/install-deps.sh installs it)"
	exit 77
fi
VIP=198.19.79.1
dmsc_net_hosts c=198.18.0.2/16 n=198.18.0.1/16 b1=198.18.1.2/16 b2=198.18.1.3/16 || exit 1
MESH=$(dmsc_cgroup_make "$P/mesh") || exit 1
dmsc_net_no_ipv6 c || exit 1

cat >"$T/server.py" <<'EOF'
import sys, time
from concurrent import futures
import grpc

name, addr = sys.argv[1], sys.argv[2]

def unary(req, ctx):
    return name.encode() + b":" + req

def stream(req, ctx):
    for i in range(5):
        yield ("%s-%d" % (name, i)).encode()

def bidi(it, ctx):
    for req in it:
        yield name.encode() + b":" + req

def fail(req, ctx):
    ctx.abort(grpc.StatusCode.UNAVAILABLE, "try later")

def flaky(req, ctx):  # v1 is unavailable, v2 echoes
    if name == "v1":
        ctx.abort(grpc.StatusCode.UNAVAILABLE, "v1 is down")
    return name.encode() + b":" + req

def who(req, ctx):  # what the backend learnt about the client
    return ", ".join(v for k, v in ctx.invocation_metadata() if k == "x-forwarded-for").encode()

h = grpc.method_handlers_generic_handler("test.Echo", {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "Stream": grpc.unary_stream_rpc_method_handler(stream),
    "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    "Fail": grpc.unary_unary_rpc_method_handler(fail),
    "Who": grpc.unary_unary_rpc_method_handler(who),
    "Get": grpc.unary_unary_rpc_method_handler(flaky),
    "Put": grpc.unary_unary_rpc_method_handler(flaky),
})
s = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
s.add_generic_rpc_handlers((h,))
s.add_insecure_port(addr)
s.start()
print("ready", flush=True)
s.wait_for_termination(timeout=600)
EOF
cat >"$T/client.py" <<'EOF'
import sys, threading, queue
import grpc

target, what = sys.argv[1], sys.argv[2]
ch = grpc.insecure_channel(target)
if what == "unary":
    n, md = int(sys.argv[3]), [tuple(sys.argv[4].split("=", 1))] if len(sys.argv) > 4 else None
    call = ch.unary_unary("/test.Echo/Unary")
    for i in range(n):
        print(call(b"x", metadata=md, timeout=5).decode().split(":")[0])
elif what == "stream":
    for m in ch.unary_stream("/test.Echo/Stream")(b"x", timeout=5):
        print(m.decode())
    print("OK")  # the call ended with grpc-status 0, in the trailers
elif what == "bidi":
    # each message waits for its answer: the stream stays open both ways
    q = queue.Queue()
    def gen():
        for i in range(3):
            yield ("m%d" % i).encode()
            q.get(timeout=5)
    for m in ch.stream_stream("/test.Echo/Bidi")(gen(), timeout=10):
        print(m.decode())
        q.put(1)
    print("OK")
elif what == "flaky":
    # N calls of METHOD with a 1 KiB message: what answered (the message
    # came back whole) or the status code
    n, call = int(sys.argv[4]), ch.unary_unary("/test.Echo/" + sys.argv[3])
    msg = b"y" * 1024
    for i in range(n):
        try:
            r = call(msg, timeout=5)
            print(r.split(b":")[0].decode() if r.endswith(b":" + msg) else "garbled")
        except grpc.RpcError as e:
            print(e.code().name)
elif what == "who":
    print(ch.unary_unary("/test.Echo/Who")(b"", metadata=[("x-forwarded-for", "203.0.113.9")], timeout=5).decode())
elif what == "echo":
    # the benchmark's backend: a short, an empty and a 300 KB message (many
    # DATA frames, past one flow-control window) come back whole, status OK
    call = ch.unary_unary("/bench.Echo/Unary")
    for msg in (b"hello", b"", b"z" * 300000):
        r, c = call.with_call(msg, timeout=5)
        print("ok" if r == b"g1:" + msg and c.code() == grpc.StatusCode.OK else "wrong %d" % len(r))
elif what == "fail":
    try:
        ch.unary_unary("/test.Echo/Fail")(b"x", timeout=5)
        print("no error")
    except grpc.RpcError as e:
        print(e.code().name, e.details())
EOF
dmsc_net_exec b1 "$PY" "$T/server.py" v1 198.18.1.2:50051 >"$T/b1.out" 2>&1 &
dmsc_net_exec b1 "$BIN/tools/dmsc-grpcsrv" --listen 198.18.1.2:50052 --name g1 --max-seconds 300 \
	>"$T/g1.out" 2>&1 &
dmsc_net_exec b2 "$PY" "$T/server.py" v2 198.18.1.3:50051 >"$T/b2.out" 2>&1 &
for b in b1 b2 g1; do
	dmsc_wait_ready "$T/$b.out" 20 || { t_fail "gRPC server $b"; cat "$T/$b.out"; t_summary; exit 1; }
done

cat >"$T/policy.json" <<EOF
{ "services": [
  { "name": "echo", "vip": "$VIP", "port": 50051, "protocol": "http",
    "backends": [
      { "address": "198.18.1.2", "port": 50051, "weight": 1, "labels": { "version": "v1" } },
      { "address": "198.18.1.3", "port": 50051, "weight": 1, "labels": { "version": "v2" } } ],
    "routes": [
      { "match": { "path": "/test.Echo/Stream" }, "backends": { "version": "v2" } },
      { "match": { "path": "/test.Echo/Bidi" }, "backends": { "version": "v1" } },
      { "match": { "path": "/test.Echo/Fail" }, "backends": { "version": "v1" } },
      { "match": { "path": "/test.Echo/Get" }, "idempotent": true, "retries": 1 },
      { "match": { "path": "/test.Echo/Put" }, "retries": 1 },
      { "match": { "path_prefix": "/", "headers": { "x-version": "v2" } }, "backends": { "version": "v2" } } ] } ] }
EOF
t_check "install on the test cgroup" "$CTL" install --cgroup "$MESH"
t_check "apply the policy" "$CTL" apply "$T/policy.json"
# the helper in a cgroup of the mesh, as dmscd --l7-fastpath on runs it
# (docs/design.md decision 99): its clients' connections are fast-path pairs
mkdir -p "$MESH/dmsc-l7"
dmsc_exec_in_cgroup "$MESH/dmsc-l7" ip netns exec "${P}n" "$BIN/dmsc-l7" --listen 198.18.0.1:15001 --policy "$T/policy.json" \
	--workers 2 --metrics-file "$T/metrics.prom" >"$T/l7.out" 2>"$T/l7.err" &
L7PID=$!
dmsc_wait_ready "$T/l7.out" 10 || { t_fail "dmsc-l7 ready"; cat "$T/l7.err"; t_summary; exit 1; }
client() { dmsc_run_in_cgroup "$MESH" dmsc_net_exec c "$PY" "$T/client.py" "$VIP:50051" "$@" 2>>"$T/client.err"; }

t_eq "the benchmark's gRPC backend (dmsc-grpcsrv) answers a grpcio client: 3 messages echoed, status OK" \
	"$(dmsc_net_exec c "$PY" "$T/client.py" 198.18.1.2:50052 echo 2>>"$T/client.err" | paste -sd' ')" "ok ok ok"
out=$(client unary 40 | sort | uniq -c | awk '{ printf "%s=%s ", $2, $1 }')
v1=$(grep -o 'v1=[0-9]*' <<<"$out" | cut -d= -f2)
t_eq "unary: 40 calls answered" "$(client unary 40 | grep -c '^v[12]$')" 40
fp_echo() { "$CTL" stats -o json | jq -c '.services[] | select(.name == "echo") | .fastpath | [.paired, .redirected_msgs > 0]'; }
t_check "the client's connections to the helper were fast-path pairs ($(fp_echo))" \
	jq -e '.[0] >= 1 and .[1]' <<<"$(fp_echo)"
t_range "unary: split by weight 1:1 (v1 answered)" "${v1:-0}" 8 32
t_eq "unary with metadata x-version: v2: all 20 to v2" \
	"$(client unary 20 x-version=v2 | sort | uniq -c | awk '{ print $1 $2 }')" "20v2"
t_eq "server streaming, routed by method to v2: 5 messages in order, then status OK" \
	"$(client stream | paste -sd' ')" "v2-0 v2-1 v2-2 v2-3 v2-4 OK"
t_eq "bidirectional, routed by method to v1: 3 messages answered one by one, then OK" \
	"$(client bidi | paste -sd' ')" "v1:m0 v1:m1 v1:m2 OK"
t_eq "a call the backend fails: the client gets its status and message (trailers carried)" \
	"$(client fail)" "UNAVAILABLE try later"
count() { sort | uniq -c | awk '{ printf "%s%s ", $1, $2 }'; }
t_eq "UNAVAILABLE from v1 on a route marked \"idempotent\": 20 calls all answered by v2, message whole" \
	"$(client flaky Get 20 | count)" "20v2 "
out=$(client flaky Put 20 | count)
t_range "...on a route not marked: some calls get UNAVAILABLE (not sent again)" \
	"$(grep -o '[0-9]*UNAVAILABLE' <<<"$out" | sed 's/UNAVAILABLE$//')" 1 19
t_check "metrics: the retries counted for the Get route" t_wait 5 \
	grep -q '^dmsc_l7_retries_total{service="echo",route="3"} [1-9]' "$T/metrics.prom"
# the client's address as the helper saw it: its own, or 127.0.0.1 through
# the listener in its namespace
t_check "X-Forwarded-For on HTTP/2: the client's value kept, its address appended" \
	grep -Eqx '203\.0\.113\.9, (198\.18\.0\.2|127\.0\.0\.1)' <(client who)
t_check "metrics: grpc-status 14 counted for the Fail route" t_wait 5 \
	grep -q '^dmsc_l7_grpc_responses_total{service="echo",route="2",grpc_status="14"} 1$' "$T/metrics.prom"
t_check "metrics: grpc-status 0 counted for the streams routed by method" \
	grep -q '^dmsc_l7_grpc_responses_total{service="echo",route="0",grpc_status="0"} 1$' "$T/metrics.prom"
t_check "dmsc-l7 still running" kill -0 "$L7PID"
t_check "uninstall" "$CTL" uninstall
t_summary
