# grpc_echo.py NAME ADDR [WORKERS] [SECONDS]: a gRPC server (Python's grpcio,
# generic handlers: raw bytes, no generated code) that says who it is, for
# tests/kernel/test_l7_grpc.sh and scripts/bench-h2.sh. Prints "ready" once
# it serves; ends after SECONDS (default 600).
#   test.Echo   Unary (NAME:request), Stream (5 messages NAME-i), Bidi (one
#               answer NAME:message per message), Fail (UNAVAILABLE), Who
#               (the x-forwarded-for the backend was sent), Get and Put
#               (UNAVAILABLE when NAME is v1, else an echo)
#   bench.Echo  Unary: a fixed 32-byte answer whatever the request
import sys
from concurrent import futures
import grpc

name, addr = sys.argv[1], sys.argv[2]
workers = int(sys.argv[3]) if len(sys.argv) > 3 else 8
seconds = int(sys.argv[4]) if len(sys.argv) > 4 else 600


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


bench_answer = (name + ":").encode().ljust(32, b"y")
handlers = (
    grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Who": grpc.unary_unary_rpc_method_handler(who),
        "Get": grpc.unary_unary_rpc_method_handler(flaky),
        "Put": grpc.unary_unary_rpc_method_handler(flaky),
    }),
    grpc.method_handlers_generic_handler("bench.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(lambda req, ctx: bench_answer),
    }),
)
s = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), maximum_concurrent_rpcs=None)
s.add_generic_rpc_handlers(handlers)
s.add_insecure_port(addr)
s.start()
print("ready", flush=True)
s.wait_for_termination(timeout=seconds)
