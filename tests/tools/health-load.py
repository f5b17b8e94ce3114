#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""A steady connection load for tests/kernel/test_health.sh and
scripts/bench-health.sh.

    health-load.py ADDR:PORT --rate R --seconds S [--timeout-ms T]
                   [--stop-file F] [--started-file F]

opens one connection at a time, R per second, for S seconds (or until F
exists), reads the first line the server sends (dmsc-testsrv --mode id
sends its name) and closes. Prints one JSON object: attempts, ok, failures,
per backend name the connections, per reason (an errno name, or EOF) the
failures, the CLOCK_MONOTONIC times (ns) of the first and last failure
and of every failure with its reason (at most 10000), and per backend name the time (ns)
of its first connection. --started-file is written once the
first connection was made. Standard library only; every wait is bounded.
"""
import argparse
import errno
import json
import os
import socket
import sys
import time


def one(host, port, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        data = b""
        while not data.endswith(b"\n") and len(data) < 256:
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
        if not data.endswith(b"\n"):
            return None, "EOF"
        return data.strip().decode(errors="replace"), None
    except socket.timeout:
        return None, "ETIMEDOUT"
    except OSError as e:
        return None, errno.errorcode.get(e.errno, str(e.errno))
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--timeout-ms", type=int, default=1000)
    ap.add_argument("--stop-file")
    ap.add_argument("--started-file")
    a = ap.parse_args()
    host, port = a.target.rsplit(":", 1)
    port = int(port)
    period = 1.0 / a.rate
    start = time.monotonic()
    end = start + min(a.seconds, 600)
    out = {"attempts": 0, "ok": 0, "failures": 0, "backends": {}, "errors": {},
           "first_failure_ns": 0, "last_failure_ns": 0, "failure_ns": [], "failure_errs": [], "first_ok_ns": {}}
    nxt = start
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if a.stop_file and out["attempts"] % 50 == 0 and os.path.exists(a.stop_file):
            break
        if now < nxt:
            time.sleep(nxt - now)
        nxt += period
        name, err = one(host, port, a.timeout_ms / 1000.0)
        out["attempts"] += 1
        if err is None:
            out["ok"] += 1
            out["backends"][name] = out["backends"].get(name, 0) + 1
            if name not in out["first_ok_ns"]:
                out["first_ok_ns"][name] = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            if a.started_file and out["ok"] == 1:
                open(a.started_file, "w").close()
            continue
        t = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        out["failures"] += 1
        out["errors"][err] = out["errors"].get(err, 0) + 1
        if not out["first_failure_ns"]:
            out["first_failure_ns"] = t
        out["last_failure_ns"] = t
        if len(out["failure_ns"]) < 10000:
            out["failure_ns"].append(t)
            out["failure_errs"].append(err)
    out["seconds"] = round(time.monotonic() - start, 3)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
