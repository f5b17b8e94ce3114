#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Raw TCP clients for tests/kernel/test_l7_robust.sh and test_mtls.sh.

    l7-client.py raw ADDR:PORT [--file F] [--body-bytes N] [--shut] [--mark M]
                 [--timeout S]
        connects, sends F then N bytes of 'x' (while reading), optionally
        shuts its side down (SHUT_WR), and writes every byte it receives to
        stdout until the peer closes or S seconds (default 10) pass. --mark
        sets SO_MARK first. Exit 0; 3 when the connect failed (the errno
        name on stderr).
    l7-client.py hold ADDR:PORT --count N [--seconds S]
        opens N connections, sends nothing, prints "held N" and keeps them
        until stdin closes or S seconds (default 60) pass.
    l7-client.py keep ADDR:PORT --marker M [--seconds S]
        connects, sends one HTTP/1.1 GET / (kept alive), reads until the
        answer holds M, prints "answered", then waits for the peer to end
        the connection and prints how: "reset", "closed" (an orderly end)
        or "open" after S seconds (default 60). Exit 0; 3 when the connect
        failed, 4 when no answer holding M came.
ADDR is an IPv4 address or a bracketed IPv6 one ("[2001:2::1]").
Standard library only; every wait is bounded.
"""
import argparse
import errno
import os
import select
import socket
import sys
import threading
import time

SO_MARK = 36


def connect(target, mark=None, timeout=10):
    host, port = target.rsplit(":", 1)
    family = socket.AF_INET
    if host.startswith("["):  # a bracketed IPv6 address
        host, family = host[1:-1], socket.AF_INET6
    s = socket.socket(family)
    if mark is not None:
        s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    s.settimeout(timeout)
    s.connect((host, int(port)))
    return s


def raw(a):
    try:
        s = connect(a.target, a.mark, a.timeout)
    except OSError as e:
        print("connect: %s" % errno.errorcode.get(e.errno, str(e)), file=sys.stderr)
        return 3
    data = open(a.file, "rb").read() if a.file else b""

    def send():
        try:
            s.sendall(data)
            left = a.body_bytes
            chunk = b"x" * 65536
            while left > 0:
                n = min(left, len(chunk))
                s.sendall(chunk[:n])
                left -= n
            if a.shut:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    t = threading.Thread(target=send, daemon=True)
    t.start()
    out = sys.stdout.buffer
    end = time.monotonic() + a.timeout
    while time.monotonic() < end:
        s.settimeout(max(0.01, end - time.monotonic()))
        try:
            b = s.recv(65536)
        except socket.timeout:
            break
        except OSError as e:
            print("recv: %s" % errno.errorcode.get(e.errno, str(e)), file=sys.stderr)
            break
        if not b:
            break
        out.write(b)
    out.flush()
    return 0


def hold(a):
    socks = []
    for _ in range(a.count):
        socks.append(connect(a.target))
    print("held %d" % len(socks), flush=True)
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        r, _, _ = select.select([sys.stdin], [], [], 0.2)
        if r and not os.read(sys.stdin.fileno(), 4096):
            break
    return 0


def keep(a):
    got = b""
    try:
        s = connect(a.target)
        s.sendall(b"GET / HTTP/1.1\r\nHost: keep\r\n\r\n")
        while a.marker.encode() not in got:
            b = s.recv(65536)
            if not b:
                return 4
            got += b
    except OSError as e:
        print("keep: %s" % errno.errorcode.get(e.errno, str(e)), file=sys.stderr)
        return 3 if not got else 4
    print("answered", flush=True)
    s.settimeout(a.seconds)
    try:
        how = "closed" if not s.recv(65536) else "more bytes"
    except socket.timeout:
        how = "open"
    except ConnectionResetError:
        how = "reset"
    except OSError as e:
        how = errno.errorcode.get(e.errno, str(e))
    print(how, flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("raw")
    r.add_argument("target")
    r.add_argument("--file")
    r.add_argument("--body-bytes", type=int, default=0)
    r.add_argument("--shut", action="store_true")
    r.add_argument("--mark", type=lambda v: int(v, 0))
    r.add_argument("--timeout", type=float, default=10)
    h = sub.add_parser("hold")
    h.add_argument("target")
    h.add_argument("--count", type=int, required=True)
    h.add_argument("--seconds", type=float, default=60)
    k = sub.add_parser("keep")
    k.add_argument("target")
    k.add_argument("--marker", required=True)
    k.add_argument("--seconds", type=float, default=60)
    a = ap.parse_args()
    return {"raw": raw, "hold": hold, "keep": keep}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
