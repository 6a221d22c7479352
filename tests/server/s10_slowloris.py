#!/usr/bin/env python3
"""S10 (RELIABILITY.md 5b): slowloris and incomplete frames are bounded, on the real larivd.

500 connections say HELLO, then trickle a SEND line one byte at a time that never completes.
With frame_timeout_ms F, every one must be closed with -ERR timeout within F + 1 s (scaled under
sanitizers). Meanwhile a healthy pair keeps routing. Reports the daemon's RSS per slow connection
and the healthy pair's round-trip p99 with and without the slow connections (printed, not judged:
timings on a shared 2-core machine are not pass/fail material).
"""
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import time

from harness import SCALE, free_port, hello, rss_kib

LARIVD = sys.argv[1]
N = int(os.environ.get("S10_CONNECTIONS", "500"))
FRAME_MS = 2000


def read_line(f):
    line = f.readline()
    if not line:
        raise EOFError
    return line


def rtts(port, count):
    """Round trips of a SEND with ACK between a healthy pair, in microseconds."""
    a, fa, _ = hello(port, b"a")
    b, fb, idb = hello(port, b"b")
    out = []
    for i in range(count):
        t = time.perf_counter()
        a.sendall(b"SEND %s 2 k%d\r\nhi\r\n" % (idb, i))
        while not read_line(fa).startswith(b"ACK"):
            pass
        read_line(fb)  # MSG line
        fb.read(4)      # "hi\r\n"
        out.append((time.perf_counter() - t) * 1e6)
    a.close()
    b.close()
    return out


def main():
    port, mport = free_port(), free_port()
    daemon = subprocess.Popen(
        [LARIVD, "--port", str(port), "--monitor-port", str(mport), "--threads", "2",
         "--frame-timeout-ms", str(FRAME_MS), "--heartbeat-ms", "0", "--log-level", "warn"])
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        base = statistics.quantiles(rtts(port, 300), n=100)[98]
        rss0 = rss_kib(daemon.pid)
        slow = []
        for i in range(N):
            s = socket.create_connection(("127.0.0.1", port), timeout=10 * SCALE)
            s.sendall(b"HELLO\r\n")
            s.setblocking(False)
            slow.append(s)
        line = b"SEND 00000000000000000000000000000000 5\r\n"
        start = time.time()
        sent = {s: 0 for s in slow}
        closed_at = {}
        got_timeout = 0
        buffers = {s: b"" for s in slow}
        rss_peak = rss0
        during = []
        next_trickle = 0.0
        while len(closed_at) < N and time.time() - start < (FRAME_MS / 1000 + 5) * SCALE + 5:
            now = time.time()
            if now >= next_trickle:
                next_trickle = now + 0.25
                for s in slow:
                    if s in closed_at:
                        continue
                    try:
                        # The line's bytes one at a time, never its "\r\n"; then more digits.
                        k = sent[s]
                        s.send(line[k:k + 1] if k < len(line) - 2 else b"0")
                        sent[s] += 1
                    except OSError:
                        pass
                rss_peak = max(rss_peak, rss_kib(daemon.pid))
                if len(during) < 100:
                    during.extend(rtts(port, 20))
            ready, _, _ = select.select([s for s in slow if s not in closed_at], [], [], 0.05)
            for s in ready:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                buffers[s] += data
                if not data:
                    closed_at[s] = time.time() - start
                    if b"-ERR timeout" in buffers[s]:
                        got_timeout += 1
        worst = max(closed_at.values()) if closed_at else float("inf")
        bound = (FRAME_MS / 1000 + 1) * SCALE + 0.25 * N / 500
        per_conn = (rss_peak - rss0) / N
        during_p99 = statistics.quantiles(during, n=100)[98] if len(during) > 2 else float("nan")
        print(f"S10: {len(closed_at)}/{N} trickling connections closed, {got_timeout} with -ERR timeout; "
              f"slowest after {worst:.2f} s (frame deadline {FRAME_MS / 1000:.1f} s, bound {bound:.2f} s); "
              f"daemon RSS +{per_conn:.1f} KiB per slow connection; healthy SEND/ACK round trip p99 "
              f"{base:.0f} us alone, {during_p99:.0f} us during (ratio {during_p99 / base:.2f})")
        ok = len(closed_at) == N and got_timeout == N and worst <= bound
        assert daemon.poll() is None, "larivd died"
        daemon.send_signal(signal.SIGTERM)
        ok = ok and daemon.wait(timeout=10 * SCALE) == 0
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        if daemon.poll() is None:
            daemon.kill()


if __name__ == "__main__":
    sys.exit(main())
