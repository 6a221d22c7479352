#!/usr/bin/env python3
"""S14 (RELIABILITY.md 5b): clean shutdown ordering, under valgrind memcheck.

Runs the larivd binary (argv[1]) under valgrind, opens N sessions (default 1000) that exchange a
few messages, then sends SIGTERM with everything still connected. Passes when larivd exits 0 and
memcheck reports no invalid reads or writes and no definite leaks (sockets must not outlive the
io_context; sessions go first).
"""
import os
import signal
import socket
import subprocess
import sys
import time

from harness import free_port

LARIVD = sys.argv[1]
N = int(os.environ.get("S14_SESSIONS", "1000"))


def main():
    port = free_port()
    log = f"/tmp/lariv-s14-{os.getpid()}.valgrind"
    cmd = ["valgrind", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite",
           f"--log-file={log}", LARIVD, "--port", str(port), "--monitor-port", "0", "--threads", "2",
           "--heartbeat-ms", "0", "--handshake-timeout-ms", "60000", "--drain-timeout-ms", "5000",
           "--log-level", "warn"]
    daemon = subprocess.Popen(cmd)
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        socks = []
        for i in range(N):
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            s.sendall(b"HELLO\r\n")
            socks.append(s)
        # Read every +HELLO, and route a message from each session to the first one.
        ids = []
        for s in socks:
            f = s.makefile("rb")
            parts = f.readline().split()
            body = f.read(int(parts[1]))
            f.readline()
            ids.append(body.split(b'"session":"')[1][:32])
        for s in socks[1:200]:
            s.sendall(b"SEND %s 3\r\nabc\r\n" % ids[0])
        time.sleep(1)
        t = time.time()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=120)
        took = time.time() - t
        with open(log) as f:
            report = f.read()
        summary = [l for l in report.splitlines() if "ERROR SUMMARY" in l or "definitely lost" in l]
        print(f"S14: {N} live sessions at SIGTERM; larivd under valgrind exited {code} in {took:.1f} s")
        for line in summary:
            print("S14:", line.split("== ", 1)[-1])
        if code != 0:
            print(report[-4000:])
        for s in socks:
            s.close()
        ok = code == 0
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        if daemon.poll() is None:
            daemon.kill()
        try:
            os.unlink(log)
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
