#!/usr/bin/env python3
"""Two larivd nodes (a real etcd) vs two nats-server 2.9 nodes joined by routes, one client.

Every message crosses nodes: `lariv bench --server NODE1 --server2 NODE2` puts each pair's sender
on node 1 and its receiver on node 2, for both servers, with the same engine (tools/lariv/bench.cpp;
for NATS the receiver subscribes on node 2 and the sender publishes on node 1, which forwards over
its route). Rows: routed 16 B and 256 B with 8 pairs, 16 B with 1 pair, larivd with every SEND
acked (the owner's verdict crosses back: nats has no equivalent), and fixed-rate one-way latency
at 10k msgs/s. Runs are interleaved (rep 1 larivd, rep 1 nats, ...) on one pair of clusters per
server; medians and ratios are printed (ratio > 1: larivd is better).

Usage: cluster_bench.py LARIV LARIVD [--reps N] [--quick] [--out DIR]
Needs etcd (etcd-server) and nats-server (scripts/deps.sh bench). Exit 1 when a run fails (a lost,
corrupt or reordered message, an error reply).
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cluster"))
from cluster_harness import Etcd, Node, free_port, wait_until  # noqa: E402


def nats_binary():
    for c in (shutil.which("nats-server"), "/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if c and os.access(c, os.X_OK):
            return c
    sys.exit("cluster_bench: nats-server is missing: run scripts/deps.sh bench (Debian package nats-server)")


class NatsPair:
    """Two nats-server processes joined by routes (each lists the other's cluster port)."""

    def __init__(self, binary, workdir):
        self.ports = [free_port(), free_port()]
        self.cports = [free_port(), free_port()]
        self.mports = [free_port(), free_port()]
        self.procs = []
        for i in range(2):
            other = self.cports[1 - i]
            log = open(os.path.join(workdir, f"nats{i + 1}.log"), "w")
            self.procs.append(subprocess.Popen(
                [binary, "-a", "127.0.0.1", "-p", str(self.ports[i]), "-m", str(self.mports[i]),
                 "--cluster_name", "bench", "-cluster", f"nats://127.0.0.1:{self.cports[i]}",
                 "-routes", f"nats://127.0.0.1:{other}"], stdout=log, stderr=subprocess.STDOUT))

        def routed():
            for m in self.mports:
                z = json.load(urllib.request.urlopen(f"http://127.0.0.1:{m}/routez", timeout=2))
                if z.get("num_routes", 0) < 1:
                    return False
            return True
        wait_until(routed, 20, "nats: both servers routed to each other")

    @property
    def addresses(self):
        return [f"127.0.0.1:{p}" for p in self.ports]

    def close(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lariv")
    ap.add_argument("larivd")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="build/bench-cluster")
    a = ap.parse_args()
    reps = 1 if a.quick else a.reps
    secs, warm = ("0.5", "0.1") if a.quick else ("3", "0.5")
    os.makedirs(a.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="lariv-bench-cluster-")
    nats = nats_binary()

    rows = [
        ("route-16B-8p", ["route", "--pairs", "8", "--size", "16"], True),
        ("route-16B-1p", ["route", "--pairs", "1", "--size", "16"], True),
        ("route-256B-8p", ["route", "--pairs", "8", "--size", "256"], True),
        ("route-16B-8p-acked", ["route", "--pairs", "8", "--size", "16", "--ack"], False),
        ("rate-10k", ["rate", "--rate", "10000", "--pairs", "4", "--size", "16"], True),
    ]
    for d in ("etcd", "larivd1", "larivd2"):
        os.makedirs(os.path.join(work, d))
    etcd = Etcd(workdir=os.path.join(work, "etcd"))
    etcd.start()
    nodes = []
    np_ = None
    runs = []
    try:
        for i in (1, 2):
            n = Node(a.larivd, etcd.endpoint, node_id=i, ttl=10,
                     workdir=os.path.join(work, f"larivd{i}"), label=f"larivd{i}")
            n.start()
            nodes.append(n)
        wait_until(lambda: all(any(p.get("state") == "up" for p in n.routez()["peers"]) for n in nodes), 20,
                   "larivd: the two nodes linked")
        np_ = NatsPair(nats, work)
        lar = [n.client_address for n in nodes]
        nat = np_.addresses
        print(f"# bench-cluster: 2 larivd nodes ({subprocess.run([a.larivd, '--version'], capture_output=True, text=True).stdout.strip()}) "
              f"vs 2 nats-server nodes ({subprocess.run([nats, '--version'], capture_output=True, text=True).stdout.strip()})")
        print(f"# every message crosses nodes; {reps} rep(s), {secs} s measured after {warm} s warm-up, interleaved")
        for name, args, both in rows:
            for rep in range(1, reps + 1):
                for srv in (("larivd", "nats") if both else ("larivd",)):
                    addrs = lar if srv == "larivd" else nat
                    cmd = [a.lariv, "bench", *args, "--seconds", secs, "--warmup", warm, "--protocol",
                           "lariv" if srv == "larivd" else "nats", "--server", addrs[0], "--server2", addrs[1],
                           "--json", "--quiet"]
                    r = subprocess.run(cmd, capture_output=True, text=True)
                    if r.returncode != 0:
                        print(r.stdout, r.stderr, file=sys.stderr)
                        sys.exit(f"cluster_bench: {name} rep {rep} against {srv} failed (exit {r.returncode})")
                    runs.append({"row": name, "server": srv, "rep": rep, "result": json.loads(r.stdout)})
                    print(f"  {name:<20} rep {rep} {srv:<6} done", file=sys.stderr)
        # Cost per forwarded message on the larivd side: CPU of both nodes over one extra run.
        cpu0 = [cpu_s(n.pid) for n in nodes]
        r = subprocess.run([a.lariv, "bench", "route", "--pairs", "8", "--size", "16", "--seconds", secs,
                            "--warmup", warm, "--server", lar[0], "--server2", lar[1], "--json", "--quiet"],
                           capture_output=True, text=True, check=True)
        cpu1 = [cpu_s(n.pid) for n in nodes]
        res = json.loads(r.stdout)
        msgs = res["msgs"] if "msgs" in res else res["msgs_per_s"] * float(secs)
        cost = {"node1_ns": (cpu1[0] - cpu0[0]) / msgs * 1e9, "node2_ns": (cpu1[1] - cpu0[1]) / msgs * 1e9}
    finally:
        if np_:
            np_.close()
        for n in nodes:
            n.close()
        etcd.close()
    with open(os.path.join(a.out, "runs.jsonl"), "w") as f:
        for r in runs:
            f.write(json.dumps(r) + "\n")

    def get(res, path):
        for k in path.split("."):
            res = res[k]
        return res

    def med(row, srv, path):
        vals = [get(r["result"], path) for r in runs if r["row"] == row and r["server"] == srv]
        return statistics.median(vals) if vals else None

    metrics = [
        ("route-16B-8p", "cross-node 16 B, 8 pairs (msgs/s)", "msgs_per_s", True),
        ("route-16B-1p", "cross-node 16 B, 1 pair (msgs/s)", "msgs_per_s", True),
        ("route-256B-8p", "cross-node 256 B, 8 pairs (MB/s)", "mb_per_s", True),
        ("rate-10k", "cross-node 10k msgs/s p50 (us)", "latency_us.p50", False),
        ("rate-10k", "cross-node 10k msgs/s p99 (us)", "latency_us.p99", False),
        ("rate-10k", "cross-node 10k msgs/s p99.9 (us)", "latency_us.p99_9", False),
    ]
    lines = ["| row | larivd x2 | nats-server x2 | ratio |", "|---|---:|---:|---:|"]
    for row, label, path, higher in metrics:
        l, n = med(row, "larivd", path), med(row, "nats", path)
        ratio = (l / n if higher else n / l) if l and n else None
        lines.append(f"| {label} | {l:,.0f} | {n:,.0f} | {ratio:.2f} |" if ratio else f"| {label} | {l} | {n} | - |")
    acked = med("route-16B-8p-acked", "larivd", "msgs_per_s")
    nat8 = med("route-16B-8p", "nats", "msgs_per_s")
    lines.append(f"| cross-node 16 B, 8 pairs, every SEND acked by the owner (msgs/s) | {acked:,.0f} | "
                 f"{nat8:,.0f} (no acks) | {acked / nat8:.2f} |")
    lines.append(f"\nlarivd CPU per forwarded 16 B message: {cost['node1_ns']:.0f} ns on the sender's node, "
                 f"{cost['node2_ns']:.0f} ns on the receiver's node")
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(table + "\n")
    shutil.rmtree(work, ignore_errors=True)


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
