#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""IPv6 and dual-stack ends for tests/kernel/test_ipv6.sh.

    v6-peer.py serve --name NAME --listen ADDR:PORT [--listen ...] [--max-seconds N]
    v6-peer.py tcp --to ADDR:PORT --count N [--dual] [--timeout S] [--until-file FILE]
                   [--after-errors K:M]
    v6-peer.py udp --to ADDR:PORT --count N [--dual] [--connected] [--timeout S]
                   [--per-socket K] [--pause-file FILE [--pause-seconds S]]
    v6-peer.py batch < JOBS

ADDR is an IPv4 address or a bracketed IPv6 one ("[2001:2::1]:80").

serve: on each ADDR:PORT, TCP answers one HTTP/1.0 request (or any first
line) with "200 OK", Connection: close and the body "NAME\\n", so that curl
works too; UDP answers every datagram with "NAME". Prints "ready" once
every socket is bound.

tcp / udp: COUNT sockets, one exchange each, and a JSON summary on stdout:
{"replies": n, "backends": {NAME: n}, "peer_is_target": n, "errors": {ERRNO: n}}.
peer_is_target counts the exchanges where the kernel showed the target as
the peer: getpeername() for TCP and connected UDP, recvfrom()'s source for
unconnected UDP. --dual makes every socket AF_INET6 with IPV6_V6ONLY off
(what Java, Go and many runtimes use) and writes an IPv4 target as
::ffff:a.b.c.d. tcp --until-file: stop before the next socket once FILE
exists (COUNT still bounds it). tcp --after-errors K:M: once K
exchanges have failed, M more sockets and stop (COUNT still bounds it);
the summary's "after" holds what those M did, as {"replies", "backends",
"errors"} (a random split need not pick a dead backend K times in a fixed
number of connects; this does). udp --per-socket K: K exchanges on each socket;
--pause-file: after the first one, print "paused" on stderr and wait (at
most --pause-seconds, default 120) for FILE to exist. Every loop is bounded (COUNT, K, --timeout per
operation).

batch: each line of standard input is a tcp or udp command line as above,
run in turn, each printing its JSON line: one interpreter start for many
clients (starting Python is what costs most in an emulated test guest).
"""
import argparse
import errno
import json
import os
import selectors
import shlex
import socket
import sys
import time


def split_addr(s):
    if s.startswith("["):
        host, _, port = s[1:].partition("]:")
        return socket.AF_INET6, host, int(port)
    host, _, port = s.rpartition(":")
    return socket.AF_INET, host, int(port)


def norm(family, host):
    """An address as inet_ntop prints it, to compare with what the kernel says."""
    return socket.inet_ntop(family, socket.inet_pton(family, host))


def serve(args):
    sel = selectors.DefaultSelector()
    for spec in args.listen:
        family, host, port = split_addr(spec)
        t = socket.socket(family, socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind((host, port))
        t.listen(256)
        t.setblocking(False)
        sel.register(t, selectors.EVENT_READ, "accept")
        u = socket.socket(family, socket.SOCK_DGRAM)
        u.bind((host, port))
        u.setblocking(False)
        sel.register(u, selectors.EVENT_READ, "udp")
    print("ready", flush=True)
    body = (args.name + "\n").encode()
    reply = (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
             b"Content-Length: %d\r\n\r\n" % len(body)) + body
    end = time.monotonic() + args.max_seconds
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=1.0):
            s = key.fileobj
            if key.data == "accept":
                try:
                    c, _ = s.accept()
                except OSError:
                    continue
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ, "conn")
            elif key.data == "udp":
                try:
                    _, peer = s.recvfrom(2048)
                    s.sendto(args.name.encode(), peer)
                except OSError:
                    pass
            else:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if data:
                    try:
                        s.sendall(reply)
                    except OSError:
                        pass
                sel.unregister(s)
                s.close()
    return 0


def target(args):
    family, host, port = split_addr(args.to)
    if args.dual:
        if family == socket.AF_INET:
            host = "::ffff:" + host
        family = socket.AF_INET6
    return family, norm(family, host), port


def new_socket(family, kind, dual):
    s = socket.socket(family, kind)
    if dual:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return s


def count(d, k):
    d[k] = d.get(k, 0) + 1


def exchange(s, kind, args, host, port, first):
    """One request and its answer: (backend name, the peer the kernel showed)."""
    if kind == socket.SOCK_STREAM:
        s.connect((host, port))
        peer = s.getpeername()
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while len(data) < 65536:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.partition(b"\r\n\r\n")[2].decode().strip(), peer
    if args.connected:
        if first:
            s.connect((host, port))
        peer = s.getpeername()
        s.send(b"?")
        return s.recv(2048).decode(), peer
    s.sendto(b"?", (host, port))
    data, peer = s.recvfrom(2048)
    return data.decode(), peer


def pause(path, seconds):
    print("paused", file=sys.stderr, flush=True)
    end = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < end:
        time.sleep(0.05)


def client(args, kind):
    family, host, port = target(args)
    per_socket = getattr(args, "per_socket", 1)
    res = {"replies": 0, "backends": {}, "peer_is_target": 0, "errors": {}}
    until = getattr(args, "until_file", None)
    after = getattr(args, "after_errors", None)
    whole = res
    for _ in range(args.count):
        if until and os.path.exists(until):
            break
        if after and res is whole and sum(whole["errors"].values()) >= after[0]:
            res = {"replies": 0, "backends": {}, "peer_is_target": 0, "errors": {}}
            whole["after"] = res
        if after and res is not whole and sum(res["errors"].values()) + res["replies"] >= after[1]:
            break
        s = new_socket(family, kind, args.dual)
        s.settimeout(args.timeout)
        for k in range(per_socket):
            if k == 1 and getattr(args, "pause_file", None):
                pause(args.pause_file, args.pause_seconds)
            try:
                name, peer = exchange(s, kind, args, host, port, k == 0)
                res["replies"] += 1
                count(res["backends"], name)
                if norm(family, peer[0]) == host and peer[1] == port:
                    res["peer_is_target"] += 1
            except OSError as e:
                count(res["errors"], errno.errorcode.get(e.errno, "timeout")
                      if e.errno else "timeout")
        s.close()
    json.dump(whole, sys.stdout, sort_keys=True)
    print()
    return 0


def errors_then(s):
    k, _, m = s.partition(":")
    if not (k.isdigit() and m.isdigit()) or int(k) < 1:
        raise argparse.ArgumentTypeError("want K:M, two counts, K at least 1")
    return int(k), int(m)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sv = sub.add_parser("serve")
    sv.add_argument("--name", required=True)
    sv.add_argument("--listen", action="append", required=True)
    sv.add_argument("--max-seconds", type=float, default=300)
    for name in ("tcp", "udp"):
        c = sub.add_parser(name)
        c.add_argument("--to", required=True)
        c.add_argument("--count", type=int, required=True)
        c.add_argument("--dual", action="store_true")
        c.add_argument("--timeout", type=float, default=10)
        if name == "udp":
            c.add_argument("--connected", action="store_true")
            c.add_argument("--per-socket", type=int, default=1)
            c.add_argument("--pause-file")
            c.add_argument("--pause-seconds", type=float, default=120)
        else:
            c.add_argument("--until-file")
            c.add_argument("--after-errors", type=errors_then)
    sub.add_parser("batch")
    args = ap.parse_args()
    if args.cmd == "serve":
        return serve(args)
    jobs = [args]
    if args.cmd == "batch":
        jobs = [ap.parse_args(shlex.split(line)) for line in sys.stdin if line.strip()]
    for job in jobs:
        if job.cmd not in ("tcp", "udp"):
            ap.error("a batch runs tcp and udp commands only")
        client(job, socket.SOCK_STREAM if job.cmd == "tcp" else socket.SOCK_DGRAM)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
