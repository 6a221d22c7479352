#!/usr/bin/env python3
"""larivd's sd_notify protocol (server/larivd/notify.hpp), on the real binary, without systemd.

The test plays the service manager: an AF_UNIX SOCK_DGRAM socket, its path in NOTIFY_SOCKET,
WATCHDOG_USEC=200000. Then:
1. READY=1 (with STATUS=) arrives once, and when it does the client port already accepts a
   connection and answers HELLO;
2. WATCHDOG=1 repeats about every WATCHDOG_USEC/2 (100 ms);
3. SIGHUP gives RELOADING=1 (with MONOTONIC_USEC=) then READY=1; a SIGHUP whose config file no
   longer parses gives RELOADING=1 then READY=1 too, with a STATUS= saying it was rejected;
4. SIGTERM gives STOPPING=1 and larivd exits 0;
5. WATCHDOG_PID naming another process: READY=1 but no WATCHDOG=1 (the watchdog is not ours).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from harness import SCALE, free_port, hello

LARIVD = sys.argv[1]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)
    else:
        print("ok:", what, flush=True)


class manager:
    """The service manager's end of NOTIFY_SOCKET: datagrams parsed into dicts, with arrival times."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.path = path

    def recv(self, timeout):
        """The next message as a dict, or None after `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return None
        msg = {}
        for line in data.decode().split("\n"):
            if line:
                k, _, v = line.partition("=")
                msg[k] = v
        msg["_t"] = time.monotonic()
        return msg

    def until(self, key, timeout, skip_watchdog=True):
        """Messages up to and including the first one with `key`; (that one or None, the others)."""
        seen = []
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = self.recv(max(0.01, end - time.monotonic()))
            if m is None:
                break
            if skip_watchdog and list(k for k in m if k != "_t") == ["WATCHDOG"]:
                continue
            if key in m:
                return m, seen
            seen.append(m)
        return None, seen


def env_for(sock_path, **extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LARIV_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env["NOTIFY_SOCKET"] = sock_path
    env["WATCHDOG_USEC"] = "200000"
    env.update(extra)
    return env


def connects(port):
    try:
        s, _, sid = hello(port, b"notify-probe")
        s.close()
        return len(sid) == 32
    except OSError:
        return False


def main():
    tmp = tempfile.mkdtemp(prefix="lariv-notify-")
    port, mport = free_port(), free_port()
    cfg = os.path.join(tmp, "larivd.json")
    with open(cfg, "w") as f:
        f.write('{"log_level": "info"}\n')
    mgr = manager(os.path.join(tmp, "notify.sock"))
    proc = subprocess.Popen([LARIVD, "--config", cfg, "--port", str(port), "--monitor-port", str(mport)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env_for(mgr.path))
    try:
        # 1. READY=1, and the port accepts by then.
        ready, before = mgr.until("READY", 15 * SCALE)
        check(ready is not None, "READY=1 arrives")
        if ready is None:
            return
        check(connects(port), "the client port accepts and answers HELLO when READY=1 arrives")
        check("listen=127.0.0.1:%d" % port in ready.get("STATUS", ""),
              "READY=1 carries STATUS= with the listen address: %r" % ready.get("STATUS"))
        check(not before, "nothing but WATCHDOG=1 before READY=1: %r" % before)

        # 2. WATCHDOG=1 repeats (nominally every 100 ms).
        pets = []
        end = time.monotonic() + 1.0 * SCALE
        while time.monotonic() < end:
            m = mgr.recv(max(0.01, end - time.monotonic()))
            if m is not None and "WATCHDOG" in m:
                pets.append(m["_t"])
        gaps = [b - a for a, b in zip(pets, pets[1:])]
        check(len(pets) >= 5, "WATCHDOG=1 repeats: %d in %.1f s" % (len(pets), 1.0 * SCALE))
        check(len(pets) <= 20 * SCALE, "WATCHDOG=1 is paced (WATCHDOG_USEC/2), not a flood: %d" % len(pets))
        check(bool(gaps) and max(gaps) < 0.2 * SCALE,
              "every WATCHDOG=1 within WATCHDOG_USEC of the last: max gap %.3f s" % max(gaps or [0]))

        # 3. SIGHUP: RELOADING=1 then READY=1.
        proc.send_signal(signal.SIGHUP)
        rel, _ = mgr.until("RELOADING", 10 * SCALE)
        check(rel is not None and rel.get("MONOTONIC_USEC", "").isdigit(),
              "SIGHUP: RELOADING=1 with MONOTONIC_USEC=: %r" % rel)
        again, _ = mgr.until("READY", 10 * SCALE)
        check(again is not None and again["_t"] >= (rel or {}).get("_t", 0),
              "SIGHUP: READY=1 after RELOADING=1: %r" % again)
        check(again is not None and again.get("STATUS", "").startswith("reloaded"),
              "SIGHUP: STATUS= says reloaded: %r" % (again or {}).get("STATUS"))
        with open(cfg, "w") as f:
            f.write('{"log_level": ')  # no longer parses
        proc.send_signal(signal.SIGHUP)
        rel, _ = mgr.until("RELOADING", 10 * SCALE)
        again, _ = mgr.until("READY", 10 * SCALE)
        check(rel is not None and again is not None and "rejected" in again.get("STATUS", ""),
              "a rejected SIGHUP: RELOADING=1, then READY=1 with STATUS= rejected: %r" % again)
        check(connects(port), "still serving after the rejected reload")

        # 4. SIGTERM: STOPPING=1, exit 0.
        proc.send_signal(signal.SIGTERM)
        stop, _ = mgr.until("STOPPING", 10 * SCALE)
        check(stop is not None, "SIGTERM: STOPPING=1: %r" % stop)
        rc = proc.wait(timeout=20 * SCALE)
        check(rc == 0, "exit 0 after the drain (got %d)" % rc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err = proc.stderr.read().decode(errors="replace")
        if failures:
            print(err[-3000:])

    # 5. A watchdog meant for another process (WATCHDOG_PID): READY=1 but never WATCHDOG=1.
    port, mport = free_port(), free_port()
    proc = subprocess.Popen([LARIVD, "--port", str(port), "--monitor-port", str(mport)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env_for(mgr.path, WATCHDOG_PID="1"))
    try:
        ready, _ = mgr.until("READY", 15 * SCALE)
        check(ready is not None, "WATCHDOG_PID=1: READY=1 arrives")
        pets = 0
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            m = mgr.recv(max(0.01, end - time.monotonic()))
            if m is not None and "WATCHDOG" in m:
                pets += 1
        check(pets == 0, "WATCHDOG_PID=1 (not larivd): no WATCHDOG=1 (%d)" % pets)
        proc.send_signal(signal.SIGTERM)
        check(proc.wait(timeout=20 * SCALE) == 0, "WATCHDOG_PID=1: exit 0")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        mgr.sock.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
    if failures:
        print("%d failure(s)" % len(failures))
        sys.exit(1)
    print("notify: all checks passed")
