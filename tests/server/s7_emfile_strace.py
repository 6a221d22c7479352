#!/usr/bin/env python3
"""S7 (RELIABILITY.md 5b) on the real larivd binary: the accept loop survives EMFILE.

strace injects EMFILE into accept calls 2..41 of larivd (Asio 1.22 calls accept(2), not
accept4). 100 clients connect meanwhile. Passes when: larivd's CPU time over the EMFILE period
stays under 0.2 s per 5 s (a loop that re-armed at once would spin), the accept-error log line is
rate-limited (at most one a second), a session opened before keeps working during it, and every
pending client is accepted and answered within 2 s after the injection ends.
"""
import os
import signal
import socket
import subprocess
import sys
import time

from harness import free_port

LARIVD = sys.argv[1]
FAILS = 40


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    port = free_port()
    trace_log = f"/tmp/lariv-s7-{os.getpid()}.strace"
    env = dict(os.environ, LARIV_ACCEPT_BACKOFF_MIN_MS="10", LARIV_ACCEPT_BACKOFF_MAX_MS="100",
               LARIV_LOG_LEVEL="warn")
    tracer = subprocess.Popen(
        ["strace", "--seccomp-bpf", "-f", "-qq", "-ttt", "-o", trace_log, "-e", "trace=accept",
         "-e", f"inject=accept:error=EMFILE:when=2..{FAILS + 1}",
         LARIVD, "--port", str(port), "--monitor-port", "0", "--threads", "2", "--heartbeat-ms", "0"],
        env=env, stderr=subprocess.PIPE, text=True)
    try:
        healthy = None
        for _ in range(200):
            try:
                healthy = socket.create_connection(("127.0.0.1", port), timeout=5)  # accept #1
                break
            except OSError:
                time.sleep(0.05)
        hf = healthy.makefile("rb")
        healthy.sendall(b"HELLO\r\n")
        parts = hf.readline().split()
        hf.read(int(parts[1]) + 2)
        pid = int(subprocess.check_output(["pgrep", "-P", str(tracer.pid)]).split()[0])
        cpu0, t0 = cpu_seconds(pid), time.time()
        pending = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(100)]
        for s in pending:
            s.sendall(b"HELLO\r\n")
        # During the injection the healthy session still answers.
        pings_ok = 0
        for _ in range(5):
            healthy.sendall(b"PING\r\n")
            pings_ok += hf.readline() == b"PONG\r\n"
            time.sleep(0.2)
        answered, last, last_abs = 0, 0.0, 0.0
        for s in pending:
            s.settimeout(30)
            f = s.makefile("rb")
            line = f.readline()
            if line.startswith(b"+HELLO"):
                answered += 1
                last_abs = time.time()
                last = last_abs - t0
        cpu = cpu_seconds(pid) - cpu0
        os.kill(pid, signal.SIGTERM)  # larivd itself drains; strace exits with it
        try:
            _, err = tracer.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            tracer.kill()
            _, err = tracer.communicate()
        log_lines = err.count("accept failed")
        # strace counts "when" per thread, so read when the last injected failure really was.
        with open(trace_log) as f:
            injected = [float(l.split()[1]) for l in f if "(INJECTED)" in l]
        os.unlink(trace_log)
        recovery = last_abs - max(injected)
        window = max(injected) - min(injected)
        print(f"S7: EMFILE injected into accept calls 2..{FAILS + 1} of each thread; larivd CPU {cpu:.3f} s over {last:.1f} s; "
              f"{log_lines} accept-error log lines; healthy session "
              f"answered {pings_ok}/5 PINGs meanwhile; {len(injected)} failures over {window:.1f} s; "
              f"{answered}/100 pending clients answered, the last {recovery:.2f} s after the last "
              f"failure")
        per5 = cpu / max(last, 1.0) * 5
        ok = (answered == 100 and pings_ok == 5 and per5 <= 0.2 and log_lines <= window + 2
              and recovery <= 2.0 and len(injected) >= FAILS)
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        if tracer.poll() is None:
            tracer.kill()


if __name__ == "__main__":
    sys.exit(main())
