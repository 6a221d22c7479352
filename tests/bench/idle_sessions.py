#!/usr/bin/env python3
"""Idle-session cost of a larivd binary: CPU and memory per held session.

Usage: idle_sessions.py LARIVD [SESSIONS=10000] [SECONDS=10] [extra larivd flags...]

Starts larivd on free ports, opens SESSIONS connections that HELLO and then stay silent (the
defaults: heartbeat 15 s, no idle timeout), waits 2 s, then samples the daemon's CPU time
(/proc/PID/stat utime+stime) and RSS over SECONDS. Prints one line of figures; exits 0. The
figures are printed, never judged (a benchmark, not a test).
"""
import os
import resource
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from harness import free_port, rss_kib  # noqa: E402  (the larivd test harness's helpers)

LARIVD = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
EXTRA = sys.argv[4:]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, N + 1000)), hard))
    port = free_port()
    d = subprocess.Popen([LARIVD, "--port", str(port), "--monitor-port", "0", "--threads", "2",
                          "--max-sessions", str(N + 100), "--log-level", "warn"] + EXTRA)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.3)
        base_rss = rss_kib(d.pid)
        socks = []
        for i in range(N):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b'HELLO {"name":"idle"}\r\n')
            socks.append(s)
        for s in socks:  # read each +HELLO (line and body) so nothing stays queued
            f = s.makefile("rb")
            parts = f.readline().split()
            f.read(int(parts[1]) + 2)
        time.sleep(2.0)
        c0, t0 = cpu_seconds(d.pid), time.time()
        time.sleep(SECONDS)
        c1, t1 = cpu_seconds(d.pid), time.time()
        rss = rss_kib(d.pid)
        share = (c1 - c0) / (t1 - t0) * 100
        per = (rss - base_rss) * 1024 / N
        print(f"idle sessions: {N} held {t1 - t0:.1f} s: server CPU {share:.2f}% of a core, "
              f"RSS {base_rss} -> {rss} KiB ({per:.0f} B per session)")
        for s in socks:
            s.close()
    finally:
        d.terminate()
        d.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
