#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Both ends of a WebSocket, with Debian's python3-websockets, for
tests/kernel/test_l7.sh (an Upgrade through dmsc-l7: docs/design.md
decision 82).

    ws-peer.py server ADDR PORT [--max-seconds N]
    ws-peer.py client URL [--big BYTES] [--idle-ms MS]

server: echoes every message; "bye" is answered with a close of code 4000
(the server ends it); prints "ready" once listening.

client: opens URL, sends three text messages and one binary message of
--big random bytes (default 1 MiB), each answered by its echo, waits
--idle-ms (default 0) with the connection idle, sends "hi" again, then
"bye", and prints one JSON line: {"echoed": N, "big_ok": bool,
"after_idle": bool, "close_code": CODE}. Exit 0 when every echo matched
and the server closed with 4000.
"""
import argparse
import asyncio
import json
import os
import sys

import websockets


async def serve(addr, port, max_seconds):
    async def echo(ws, _path=None):
        async for msg in ws:
            if msg == "bye":
                await ws.close(code=4000, reason="bye")
                return
            await ws.send(msg)

    async with websockets.serve(echo, addr, port, max_size=None):
        print("ready", flush=True)
        await asyncio.sleep(max_seconds)


async def client(url, big, idle_ms):
    out = {"echoed": 0, "big_ok": False, "after_idle": False, "close_code": None}
    async with websockets.connect(url, max_size=None, open_timeout=10) as ws:
        for text in ("one", "two", "three"):
            await ws.send(text)
            if await asyncio.wait_for(ws.recv(), 10) == text:
                out["echoed"] += 1
        payload = os.urandom(big)
        await ws.send(payload)
        out["big_ok"] = await asyncio.wait_for(ws.recv(), 30) == payload
        await asyncio.sleep(idle_ms / 1000)
        await ws.send("hi")
        out["after_idle"] = await asyncio.wait_for(ws.recv(), 10) == "hi"
        await ws.send("bye")
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed as e:
            out["close_code"] = e.rcvd.code if e.rcvd else None
    print(json.dumps(out), flush=True)
    ok = out["echoed"] == 3 and out["big_ok"] and out["after_idle"] and out["close_code"] == 4000
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("addr")
    s.add_argument("port", type=int)
    s.add_argument("--max-seconds", type=float, default=300)
    c = sub.add_parser("client")
    c.add_argument("url")
    c.add_argument("--big", type=int, default=1 << 20)
    c.add_argument("--idle-ms", type=int, default=0)
    a = ap.parse_args()
    if a.cmd == "server":
        asyncio.run(serve(a.addr, a.port, a.max_seconds))
        return 0
    try:
        return asyncio.run(client(a.url, a.big, a.idle_ms))
    except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
