#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Misbehaving HTTP/1.1 backends for tests/kernel/test_l7_robust.sh.

    l7-backend.py --listen ADDR:PORT [--listen ADDR:PORT ...] --mode MODE [--max-seconds N]

ADDR is an IPv4 address or a bracketed IPv6 one ("[2001:2::1]:80"). Each
--listen is a listener of its own (one accepting thread each), all in the
same mode.

Modes:
  stale     GET answers the path ("/p\\n", keep-alive); HEAD /h announces a
            body it must not send, and GET /short a Content-Length shorter
            than its body: 50 ms later comes the rest, a complete response
            ("HTTP/1.1 200 ... stale\\n") that must never reach a client.
            Prints "stale-sent" when it went out.
  late408   answers GET, then 50 ms later sends a 408 on the idle connection
            and closes it (as servers do on a keep-alive timeout); prints
            "408-sent".
  503silent the first request of the process gets a 503 (keep-alive); every
            later one is read and never answered.
  slowread  reads a request body slowly through a small receive buffer (the
            helper meets back-pressure), then answers "got N\\n".
  echohead  answers every request with its head as the body, chunked, with
            hop-by-hop fields of its own (Keep-Alive, Connection: X-Hop,
            X-Hop).
  peerport  answers every request 200 (keep-alive) with the port its peer
            connected from as the body ("PORT\n"): requests that came on one
            connection answer alike.
  fail      answers every request 503 (keep-alive).
  h2silent  speaks HTTP/2 (h2c, prior knowledge) up to its SETTINGS and their
            acknowledgement, then reads every frame and answers none: a
            stream gets no response head. Prints "h2-request" at each
            HEADERS frame.
Prints "ready" once listening. Exits after --max-seconds (default 300).
Standard library only; one thread per connection; every loop is bounded.
"""
import argparse
import socket
import sys
import threading
import time

STALE = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstale\n"
lock = threading.Lock()
requests_seen = 0


def say(line):
    with lock:
        print(line, flush=True)


def read_head(conn, buf):
    """Returns (head, rest) or (None, buf) at EOF."""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None, buf
        buf += data
        if len(buf) > 1 << 20:
            return None, buf
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head + b"\r\n\r\n", rest


def content_length(head):
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def answer(body, extra=b""):
    return (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)) + extra + b"\r\n" + body


def serve(conn, mode):
    global requests_seen
    buf = b""
    for _ in range(100000):
        head, buf = read_head(conn, buf)
        if head is None:
            return
        line = head.split(b"\r\n", 1)[0].split(b" ")
        method, target = line[0], line[1] if len(line) > 1 else b"/"
        n = content_length(head)
        with lock:
            requests_seen += 1
            first = requests_seen == 1
        if mode == "slowread":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            got = len(buf)
            while got < n:
                data = conn.recv(min(4096, n - got))
                if not data:
                    return
                got += len(data)
                time.sleep(0.001)
            buf = b""
            conn.sendall(answer(b"got %d\n" % got))
            continue
        while len(buf) < n:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
        buf = buf[n:]
        if mode == "stale":
            if method == b"HEAD":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(STALE))
                time.sleep(0.05)
                conn.sendall(STALE)
                say("stale-sent")
            elif target == b"/short":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n/short\n")
                time.sleep(0.05)
                conn.sendall(STALE)
                say("stale-sent")
            else:
                conn.sendall(answer(target + b"\n"))
        elif mode == "late408":
            conn.sendall(answer(target + b"\n"))
            time.sleep(0.05)
            conn.sendall(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
            conn.close()
            say("408-sent")
            return
        elif mode == "503silent":
            if first:
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
                continue
            say("silent")
            for _ in range(3000):  # at most 300 s, until the peer goes
                if not conn.recv(65536):
                    return
        elif mode == "peerport":
            conn.sendall(answer(b"%d\n" % conn.getpeername()[1]))
        elif mode == "fail":
            conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nfail\n")
        elif mode == "echohead":
            # two chunks, split after the request line
            cut = head.index(b"\r\n") + 2
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                         b"Keep-Alive: timeout=5\r\nConnection: keep-alive, X-Hop\r\n"
                         b"X-Hop: hop-secret\r\nX-End: end\r\n\r\n" +
                         b"%x\r\n%s\r\n" % (cut, head[:cut]) +
                         b"%x\r\n%s\r\n0\r\n\r\n" % (len(head) - cut, head[cut:]))


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # empty SETTINGS
H2_SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


def h2silent(conn):
    buf = b""
    while len(buf) < len(H2_PREFACE):
        data = conn.recv(65536)
        if not data:
            return
        buf += data
    conn.sendall(H2_SETTINGS)
    buf = buf[len(H2_PREFACE):]
    for _ in range(100000):  # frames; the peer's close ends it
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n, kind, flags = int.from_bytes(buf[:3], "big"), buf[3], buf[4]
            if kind == 4 and not flags & 1:  # SETTINGS, not an ACK
                conn.sendall(H2_SETTINGS_ACK)
            elif kind == 1:  # HEADERS: a request, never answered
                say("h2-request")
            buf = buf[9 + n:]
        data = conn.recv(65536)
        if not data:
            return
        buf += data


def handle(conn, mode):
    try:
        if mode == "h2silent":
            h2silent(conn)
            return
        serve(conn, mode)
    except OSError:
        pass
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True, action="append")
    ap.add_argument("--mode", required=True,
                    choices=["stale", "late408", "503silent", "slowread", "echohead",
                             "peerport", "fail", "h2silent"])
    ap.add_argument("--max-seconds", type=int, default=300)
    a = ap.parse_args()
    end = time.monotonic() + a.max_seconds
    socks = [listener(addr, a.mode) for addr in a.listen]
    for ls in socks[1:]:
        threading.Thread(target=accept_loop, args=(ls, a.mode, end), daemon=True).start()
    say("ready")
    accept_loop(socks[0], a.mode, end)
    return 0


def listener(addr, mode):
    host, port = addr.rsplit(":", 1)
    family = socket.AF_INET
    if host.startswith("["):
        host, family = host[1:-1], socket.AF_INET6
    ls = socket.socket(family)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if mode == "slowread":
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ls.bind((host, int(port)))
    ls.listen(128)
    ls.settimeout(1)
    return ls


def accept_loop(ls, mode, end):
    while time.monotonic() < end:
        try:
            conn, _ = ls.accept()
        except socket.timeout:
            continue
        threading.Thread(target=handle, args=(conn, mode), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
