#!/usr/bin/python3
# The etcd control-plane benchmark's policies and measurements (called by
# scripts/bench-etcd.sh, which starts etcd and the dmscd of each host).
#
#   bench-etcd.py gen DIR NS PER [PREFIX]   one policy file per namespace
#   bench-etcd.py measure ARGS...           the propagation runs; JSON out
#
# Figures only: nothing here passes or fails on them.
import argparse
import base64
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

BACKENDS = 4


def service(sid, name, weight2=1):
    """One service of 4 backends; service ids make VIPs and backends unique."""
    vip = "198.19.%d.%d" % ((sid >> 8) & 255, sid & 255)
    bes = []
    for j in range(BACKENDS):
        b = sid * BACKENDS + j
        bes.append({"address": "198.18.%d.%d" % ((b >> 8) & 255, b & 255),
                    "port": 8080, "weight": weight2 if j == 1 else 1})
    return {"name": name, "vip": vip, "port": 1000 + (sid >> 16), "backends": bes}


def ns_name(prefix, k):
    return "%s%03d" % (prefix, k)


def ns_policy(prefix, k, per, weights=None):
    weights = weights or {}
    svcs = []
    for i in range(per):
        sid = k * per + i
        svcs.append(service(sid, "%s-%d" % (ns_name(prefix, k), i), weights.get(i, 1)))
    return {"services": svcs}


def cmd_gen(a):
    os.makedirs(a.dir, exist_ok=True)
    for k in range(a.namespaces):
        with open(os.path.join(a.dir, ns_name(a.prefix, k) + ".json"), "w") as f:
            json.dump(ns_policy(a.prefix, k, a.per), f)


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        parts = line.split()  # a labelled sample keeps its labels in its name
        if len(parts) == 2:
            try:
                out[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return out


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def ms(v):
    return None if v is None else v * 1e3


def publish(a, k, weights, path):
    """Publishes namespace k with weights; returns when dmscctl started,
    when it sent the transaction and had etcd's answer (its own clock),
    when it exited, and the revision."""
    with open(path, "w") as f:
        json.dump(ns_policy("ns", k, a.per, weights), f)
    t0 = time.time()
    p = subprocess.run([a.ctl, "publish", path, "--etcd", a.etcd, "--namespace", ns_name("ns", k),
                        "-o", "json"], capture_output=True, text=True)
    t1 = time.time()
    if p.returncode != 0:
        sys.exit("publish failed: " + p.stdout + p.stderr)
    out = json.loads(p.stdout)
    return t0, out["transaction_sent_at"], out["transaction_answered_at"], t1, out["revision"]


APPLIED = re.compile(rb"^dmscd: applied .*\(etcd\)", re.M)


def log_marks(logs):
    return {h: os.stat(f).st_size for h, f in logs.items()}


def cpu_s(pids):
    """CPU time of every thread of each process (schedstat: ns on a CPU)."""
    out = {}
    for p in pids:
        t = 0
        for d in os.listdir("/proc/%d/task" % p):
            with open("/proc/%d/task/%s/schedstat" % (p, d)) as f:
                t += int(f.read().split()[0])
        out[p] = t / 1e9
    return out


def wait_applied(urls, logs, marks, rev, deadline_s=30.0, on_all=None):
    """Waits until each host's applied revision reaches rev; returns each
    one's metrics at that point. A host is scraped only once its log shows
    an apply after marks (the sizes before the publish): the propagation
    is dmscd's own timestamp, and scraping 20 hosts while they apply would
    take the CPU they need (so would a scrape loop at a short interval)."""
    got = {}
    seen = {}
    end = time.time() + deadline_s
    while len(got) < len(urls) and time.time() < end:
        for h in urls:
            if h in seen:
                continue
            size = os.stat(logs[h]).st_size
            if size <= marks[h]:
                continue
            with open(logs[h], "rb") as f:
                f.seek(marks[h])
                if APPLIED.search(f.read(size - marks[h])):
                    seen[h] = True
        if len(seen) < len(urls):
            time.sleep(0.01)
            continue
        if on_all:
            on_all()
            on_all = None
        for h, u in urls.items():
            if h in got:
                continue
            m = scrape(u)
            if m.get("dmsc_etcd_applied_revision", 0) >= rev:
                got[h] = m
            else:  # an apply of an earlier change: look again
                seen.pop(h, None)
                marks[h] = os.stat(logs[h]).st_size
        if len(got) < len(urls):
            time.sleep(0.05)
    if len(got) < len(urls):
        sys.exit("hosts %s did not reach revision %d" % (sorted(set(urls) - set(got)), rev))
    return got


class Watcher(threading.Thread):
    """A watch stream of its own on a namespace: when etcd sent each
    revision, the reference for what dmscd adds after etcd's commit."""

    def __init__(self, etcd, ns):
        super().__init__(daemon=True)
        u = urllib.parse.urlparse(etcd)
        self.host, self.port = u.hostname, u.port
        key = ("/dmsc/ns/%s/services/" % ns).encode()
        end = key[:-1] + bytes([key[-1] + 1])
        self.body = json.dumps({"create_request": {
            "key": base64.b64encode(key).decode(),
            "range_end": base64.b64encode(end).decode()}})
        self.seen = {}
        self.ready = threading.Event()
        self.cv = threading.Condition()

    def run(self):
        c = http.client.HTTPConnection(self.host, self.port)
        c.request("POST", "/v3/watch", self.body)
        r = c.getresponse()
        self.ready.set()
        buf = b""
        while True:
            chunk = r.read1(65536)
            if not chunk:
                return
            now = time.time()
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                rev = int(msg.get("result", {}).get("header", {}).get("revision", 0))
                if msg.get("result", {}).get("events"):
                    with self.cv:
                        self.seen.setdefault(rev, now)
                        self.cv.notify_all()

    def wait(self, rev, timeout=30.0):
        with self.cv:
            self.cv.wait_for(lambda: rev in self.seen, timeout)
            return self.seen.get(rev)


def cmd_measure(a):
    urls = {}
    subs = {}
    pids = {}
    for line in open(a.hosts):
        h, url, nss, pid = line.split()[:4]
        urls[h] = url
        pids[h] = int(pid)
        subs[h] = nss.split(",")
    tmp = a.tmp
    res = {"hosts": len(urls), "namespaces": a.namespaces, "services": a.namespaces * a.per,
           "subscriptions_per_host": len(next(iter(subs.values())))}
    before = {h: scrape(u) for h, u in urls.items()}
    # 1. A change in the namespace every host subscribes to (ns000).
    shared = [h for h in urls if "ns000" in subs[h]]
    w = Watcher(a.etcd, "ns000")
    w.start()
    w.ready.wait(10)
    logs = {h: os.path.join(tmp, h + ".log") for h in urls}
    prop, prop_max, start, start_max, pub, rx, written, ev, ev_max = ([] for _ in range(9))
    # where the time goes: dmscctl's start -> it sent the transaction ->
    # etcd's event (seen by the bench's own watch) -> dmscd read it ->
    # parsed into its store -> its apply began -> the maps written
    # (dmscd's timestamps, per host and change)
    stages = {"dmscctl_start_to_txn_sent": [], "txn_sent_to_event": [],
              "event_to_received": [], "received_to_parsed": [],
              "parsed_to_apply_start": [], "apply_start_to_maps": []}
    # CPU time per change, from before the publish to the last host's
    # apply (before any scrape): etcd's (serving dmscctl's read and
    # transaction, the watch streams) and every dmscd's (both threads)
    cpu = {"etcd": [], "dmscd_per_host": []}
    weights = {}  # kept: each publish changes one service's weight only
    for c in range(a.changes):
        weights[c % a.per] = 2 + c
        marks = log_marks({h: logs[h] for h in shared})
        c0 = cpu_s([a.etcd_pid] + [pids[h] for h in shared])
        c1 = {}
        t0, ts, ta, t1, rev = publish(a, 0, weights, os.path.join(tmp, "change.json"))
        after = wait_applied({h: urls[h] for h in shared}, logs, marks, rev,
                             on_all=lambda: c1.update(cpu_s(list(c0))))
        cpu["etcd"].append(c1[a.etcd_pid] - c0[a.etcd_pid])
        cpu["dmscd_per_host"] += [c1[pids[h]] - c0[pids[h]] for h in shared]
        at = [after[h]["dmsc_etcd_applied_timestamp_seconds"] for h in shared]
        prop += [x - ts for x in at]
        prop_max.append(max(at) - ts)
        start += [x - t0 for x in at]
        start_max.append(max(at) - t0)
        pub.append(t1 - t0)
        stages["dmscctl_start_to_txn_sent"].append(ts - t0)
        te = w.wait(rev)
        if te is not None:
            es = [x - te for x in at]
            ev += es
            ev_max.append(max(es))
            stages["txn_sent_to_event"].append(te - ts)
        for h in shared:
            m = after[h]
            st = [m.get('dmsc_etcd_applied_stage_timestamp_seconds{stage="%s"}' % k, 0)
                  for k in ("received", "parsed", "apply_started")]
            if not all(st):
                continue
            if te is not None:
                stages["event_to_received"].append(st[0] - te)
            stages["received_to_parsed"].append(st[1] - st[0])
            stages["parsed_to_apply_start"].append(st[2] - st[1])
            stages["apply_start_to_maps"].append(m["dmsc_etcd_applied_timestamp_seconds"] - st[2])
        for h in shared:
            rx.append(after[h]["dmsc_etcd_received_bytes_total"]
                      - before[h]["dmsc_etcd_received_bytes_total"])
            written.append(after[h]["dmsc_apply_entries_written_total"]
                           - before[h]["dmsc_apply_entries_written_total"])
            before[h] = after[h]
    res["change_shared"] = {
        "subscribed_hosts": len(shared), "changes": a.changes,
        "propagation_ms_p50": ms(pct(prop, 50)), "propagation_ms_p99": ms(pct(prop, 99)),
        "to_all_hosts_ms_p50": ms(pct(prop_max, 50)),
        "to_all_hosts_ms_p99": ms(pct(prop_max, 99)),
        "from_dmscctl_start_ms_p50": ms(pct(start, 50)),
        "from_dmscctl_start_ms_p99": ms(pct(start, 99)),
        "from_dmscctl_start_to_all_hosts_ms_p99": ms(pct(start_max, 99)),
        "publish_ms_p50": ms(pct(pub, 50)),
        "from_event_ms_p50": ms(pct(ev, 50)), "from_event_ms_p99": ms(pct(ev, 99)),
        "from_event_to_all_hosts_ms_p99": ms(pct(ev_max, 99)),
        "stages_ms": {k: {"p50": ms(pct(v, 50)), "p99": ms(pct(v, 99)), "n": len(v)}
                      for k, v in stages.items()},
        "cpu_ms_per_change": {k: {"p50": ms(pct(v, 50)), "p99": ms(pct(v, 99))}
                              for k, v in cpu.items()},
        "bytes_per_subscribed_host_p50": pct(rx, 50), "bytes_per_subscribed_host_max": max(rx),
        "entries_written_per_host_p50": pct(written, 50),
        "entries_written_per_host_max": max(written)}
    # 2. Changes in a namespace only one host subscribes to (ns001):
    # what the subscriber and every other host receive.
    one = [h for h in urls if "ns001" in subs[h]]
    others = [h for h in urls if h not in one]
    n2 = max(1, a.changes // 5)
    base = {h: scrape(u) for h, u in urls.items()}
    rx1 = []
    weights = {}
    for c in range(n2):
        weights[c % a.per] = 2 + c
        marks = log_marks({h: logs[h] for h in one})
        _, _, _, _, rev = publish(a, 1, weights, os.path.join(tmp, "change1.json"))
        after = wait_applied({h: urls[h] for h in one}, logs, marks, rev)
        for h in one:
            rx1.append(after[h]["dmsc_etcd_received_bytes_total"]
                       - base[h]["dmsc_etcd_received_bytes_total"])
            base[h] = after[h]
    time.sleep(1.0)  # anything sent to the others would have arrived
    rx_o, wr_o = [], []
    for h in others:
        m = scrape(urls[h])
        rx_o.append(m["dmsc_etcd_received_bytes_total"] - base[h]["dmsc_etcd_received_bytes_total"])
        wr_o.append(m["dmsc_apply_entries_written_total"]
                    - base[h]["dmsc_apply_entries_written_total"])
    res["change_one_subscriber"] = {
        "subscribed_hosts": len(one), "other_hosts": len(others), "changes": n2,
        "bytes_per_subscribed_host_p50": pct(rx1, 50),
        "bytes_to_other_hosts_total": sum(rx_o), "entries_written_other_hosts": sum(wr_o)}
    json.dump(res, sys.stdout)


def main():
    p = argparse.ArgumentParser()
    sp = p.add_subparsers(dest="cmd", required=True)
    g = sp.add_parser("gen")
    g.add_argument("dir")
    g.add_argument("namespaces", type=int)
    g.add_argument("per", type=int)
    g.add_argument("prefix", nargs="?", default="ns")
    m = sp.add_parser("measure")
    m.add_argument("--ctl", required=True)
    m.add_argument("--etcd", required=True)
    m.add_argument("--etcd-pid", type=int, required=True)
    m.add_argument("--hosts", required=True, help="file: HOST METRICS-URL NS,NS,... PID")
    m.add_argument("--namespaces", type=int, required=True)
    m.add_argument("--per", type=int, required=True)
    m.add_argument("--changes", type=int, default=50)
    m.add_argument("--tmp", required=True)
    a = p.parse_args()
    if a.cmd == "gen":
        cmd_gen(a)
    else:
        cmd_measure(a)


if __name__ == "__main__":
    main()
