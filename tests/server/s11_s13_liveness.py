#!/usr/bin/env python3
"""S11 and S13 (RELIABILITY.md 5b) on the real larivd binary (argv[1]).

S11: a client process that is SIGSTOPped (the kernel still ACKs; only the heartbeat notices) is
     evicted after its pings go unanswered: heartbeat 1 s, 2 outstanding pings -> evicted about
     3 s after its last input, never before 2 s; registry and fds return to baseline.
S13: a soak of SOAK_SECONDS (default 40; the LONG tier uses 600): ~200 connects/s and ~2000
     messages/s. Every second: RSS, fds, sessions, Lariv buffers. Passes when RSS at the end is
     within 2 MiB of RSS after warm-up (10 s), Lariv buffers stop growing after warm-up, and fds and
     sessions are back to baseline when the load stops.
"""
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import harness
from harness import SCALE, free_port, rss_kib, wait_for

LARIVD = sys.argv[1]
SOAK = float(os.environ.get("SOAK_SECONDS", "40"))


PORT, MPORT = free_port(), free_port()


def metric(name):
    return harness.metric(MPORT, name)


def fds(pid):
    return harness.fd_count(pid)


def hello(name=b"x"):
    return harness.hello(PORT, name)


def s11(daemon):
    base_fds, base_open = fds(daemon.pid), metric("lariv_sessions_open")
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # the half-open client: HELLO, tell the parent, then stop dead
        os.close(r)
        s, f, _ = hello(b"stopped")
        os.write(w, b"1")
        os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(3600)
        os._exit(0)
    os.close(w)
    os.read(r, 1)
    t0 = time.time()
    assert wait_for(lambda: metric("lariv_sessions_open") == base_open + 1, 5 * SCALE)
    evicted = wait_for(lambda: metric("lariv_sessions_open") == base_open, 10 * SCALE)
    took = time.time() - t0
    back = wait_for(lambda: fds(daemon.pid) <= base_fds, 2 * SCALE)
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    print(f"S11: SIGSTOPped client evicted {took:.2f} s after its HELLO (heartbeat 1 s, 2 pings); "
          f"fds back to {fds(daemon.pid)} (baseline {base_fds})")
    return evicted and 2.0 <= took <= 4.0 * SCALE and back


def s13(daemon):
    stop = threading.Event()
    counts = {"connects": 0, "msgs": 0, "errors": 0}
    lock = threading.Lock()

    def churner():  # ~200 connects/s: HELLO, one message to itself, QUIT
        while not stop.is_set():
            t = time.time()
            try:
                s, f, sid = hello(b"churn")
                s.sendall(b"SEND %s 4 c\r\nping\r\nQUIT\r\n" % sid)
                f.readline()
                s.close()
                with lock:
                    counts["connects"] += 1
            except OSError:
                with lock:
                    counts["errors"] += 1
            time.sleep(max(0.0, 0.005 - (time.time() - t)))

    def talker():  # a steady pair at ~2000 msgs/s (batches of 20 every 10 ms)
        a, fa, _ = hello(b"a")
        b, fb, idb = hello(b"b")

        def drain_b():
            while not stop.is_set():
                try:
                    if not fb.readline():
                        return
                except OSError:
                    return
        threading.Thread(target=drain_b, daemon=True).start()
        while not stop.is_set():
            a.sendall(b"".join(b"SEND %s 5\r\nhello\r\n" % idb for _ in range(20)))
            with lock:
                counts["msgs"] += 20
            time.sleep(0.01)
        a.sendall(b"QUIT\r\n")
        b.sendall(b"QUIT\r\n")
        time.sleep(0.2)
        a.close()
        b.close()

    base_fds = fds(daemon.pid)
    threads = [threading.Thread(target=churner), threading.Thread(target=talker)]
    for t in threads:
        t.start()
    samples = []
    t0 = time.time()
    while time.time() - t0 < SOAK:
        time.sleep(1)
        samples.append((time.time() - t0, rss_kib(daemon.pid), fds(daemon.pid),
                        metric("lariv_sessions_open"), metric("lariv_registry_buffers")))
    stop.set()
    for t in threads:
        t.join(10)
    settled = wait_for(lambda: metric("lariv_sessions_open") == 0 and fds(daemon.pid) <= base_fds + 2,
                       3 * SCALE)
    warm = [s for s in samples if s[0] >= min(10, SOAK / 2)]
    rss_warm, rss_end = warm[0][1], samples[-1][1]
    buffers_warm, buffers_end = warm[0][4], max(s[4] for s in samples)
    print(f"S13: {SOAK:.0f} s soak: {counts['connects']} connects ({counts['connects'] / SOAK:.0f}/s), "
          f"{counts['msgs']} messages ({counts['msgs'] / SOAK:.0f}/s), {counts['errors']} errors; "
          f"RSS {samples[0][1]} -> {rss_warm} (warm) -> {rss_end} KiB; Lariv buffers {buffers_warm} -> "
          f"{buffers_end}; after the load: sessions {metric('lariv_sessions_open')}, fds {fds(daemon.pid)} "
          f"(baseline {base_fds})")
    return (settled and counts["errors"] == 0 and rss_end <= rss_warm + 2048
            and buffers_end == buffers_warm and counts["connects"] > 0)


def main():
    daemon = subprocess.Popen(
        [LARIVD, "--port", str(PORT), "--monitor-port", str(MPORT), "--threads", "2",
         "--heartbeat-ms", "1000", "--log-level", "warn"])
    try:
        assert wait_for(lambda: metric_ok(), 10)
        ok11 = s11(daemon)
        ok13 = s13(daemon) if SOAK > 0 else True
        assert daemon.poll() is None, "larivd died"
        daemon.send_signal(signal.SIGTERM)
        ok = ok11 and ok13 and daemon.wait(timeout=10 * SCALE) == 0
        print("PASS" if ok else f"FAIL (S11 {ok11}, S13 {ok13})")
        return 0 if ok else 1
    finally:
        if daemon.poll() is None:
            daemon.kill()


def metric_ok():
    try:
        metric("lariv_sessions_open")
        return True
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
