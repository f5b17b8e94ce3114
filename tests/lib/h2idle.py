#!/usr/bin/env python3
# h2idle.py ADDR PORT N [SECONDS]: opens N HTTP/2 (h2c, prior knowledge)
# connections to ADDR:PORT, each with the client preface and an empty
# SETTINGS frame, waits until the server's first frame came on every one
# (it took them as HTTP/2), prints "ready N", and holds them idle until its
# stdin closes or SECONDS (default 60) pass. Used by tests and benchmarks to
# count idle connections and their memory.
import select, socket, sys, time

addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
hold = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
conns = []
for i in range(n):
    s = socket.create_connection((addr, port), timeout=10)
    s.sendall(hello)
    conns.append(s)
for s in conns:
    if not s.recv(9):
        print("closed", flush=True)
        sys.exit(1)
print("ready", len(conns), flush=True)
end = time.time() + hold
while time.time() < end:
    r, _, _ = select.select([sys.stdin], [], [], max(0.0, min(1.0, end - time.time())))
    if r and not sys.stdin.read(1):
        break
