#!/usr/bin/env python3
"""S5 (RELIABILITY.md 5b): the real larivd survives many abrupt disconnects under load.

Starts the larivd binary given as argv[1] on loopback, runs healthy client pairs that exchange
acknowledged messages, and meanwhile hammers it with abrupt disconnects, a third each of:
  (a) connect and reset at once (SO_LINGER 0),
  (b) HELLO, half a SEND frame, then FIN,
  (c) HELLO, a SEND to itself, then reset without reading the reply,
plus child processes holding 100 connections each, killed with SIGKILL.
Then: the daemon is alive, its fd count is back to baseline (+-2) within 2 s, the registry holds
exactly the healthy sessions, no acknowledged message was lost or duplicated, and it drains on
SIGTERM with exit code 0. Cycles: S5_CYCLES (default 30000; the PR bar is 1e5, LONG 1e6).
"""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import harness
from harness import SCALE, fd_count, free_port

LARIVD = sys.argv[1]
CYCLES = int(os.environ.get("S5_CYCLES", "30000"))


PORT, MPORT = free_port(), free_port()
LINGER0 = struct.pack("ii", 1, 0)


def metric(name):
    return harness.metric(MPORT, name)


class Conn:
    def __init__(self, name):
        self.s = socket.create_connection(("127.0.0.1", PORT), timeout=10 * SCALE)
        self.f = self.s.makefile("rb")
        self.s.sendall(b'HELLO {"name":"%s"}\r\n' % name.encode())
        line = self.f.readline().split()
        assert line and line[0] == b"+HELLO", line
        self.id = json.loads(self.f.read(int(line[1])))["session"]
        self.f.readline()

    def frame(self):
        """Next frame as (verb, args, body)."""
        line = self.f.readline()
        if not line:
            return None
        parts = line.split()
        if parts[0] in (b"MSG",) or parts[0].startswith(b"+") and len(parts) == 2 and parts[1].isdigit():
            body = self.f.read(int(parts[-1]))
            self.f.readline()
            return parts[0], parts[1:], body
        return parts[0], parts[1:], b""


def healthy_pair(idx, stop, results):
    """A sends numbered messages to B with tokens; B records what it got."""
    a, b = Conn(f"a{idx}"), Conn(f"b{idx}")
    acked, got, errors = set(), [], []

    def reader():
        while True:
            fr = b.frame()
            if fr is None:
                return
            if fr[0] == b"MSG":
                got.append(int(fr[2]))
            elif fr[0] == b"PING":
                b.s.sendall(b"PONG\r\n")
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    n = 0
    while not stop.is_set():
        payload = str(n).encode()
        a.s.sendall(b"SEND %s %d t%d\r\n%s\r\n" % (b.id.encode(), len(payload), n, payload))
        while True:
            fr = a.frame()
            if fr[0] == b"ACK":
                if fr[1][1] == b"ok":
                    acked.add(n)
                else:
                    errors.append(fr[1][1])
                break
            if fr[0] == b"PING":
                a.s.sendall(b"PONG\r\n")
        n += 1
    # Let the last deliveries arrive, then close politely.
    time.sleep(0.5 * SCALE)
    a.s.sendall(b"QUIT\r\n")
    b.s.sendall(b"QUIT\r\n")
    t.join(5 * SCALE)
    results[idx] = (acked, got, errors)


def rst(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
    s.close()


def hammer(cycles, counts):
    for i in range(cycles):
        try:
            # Spread sources over 127.0.0.2-251: the FIN closes leave TIME_WAIT on our side, and
            # one source address has only ~28k ephemeral ports.
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(5 * SCALE)
            s.bind((f"127.0.0.{2 + (i // 3) % 250}", 0))
            s.connect(("127.0.0.1", PORT))
            kind = i % 3
            if kind == 0:
                rst(s)
            elif kind == 1:
                s.sendall(b"HELLO\r\nSEND 0000000000000000000000000000000")  # half a frame
                s.shutdown(socket.SHUT_WR)
                s.close()
            else:
                s.sendall(b"HELLO\r\nPING\r\nSEND 00000000000000000000000000000000 3 x\r\nabc\r\n")
                rst(s)
            counts[kind] += 1
        except OSError as e:
            counts[3] += 1


def holder():
    """Child process: hold 100 connections until killed."""
    socks = [socket.create_connection(("127.0.0.1", PORT)) for _ in range(100)]
    for s in socks:
        s.sendall(b"HELLO\r\n")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    time.sleep(3600)


def main():
    if len(sys.argv) > 2 and sys.argv[2] == "--holder":
        holder()
        return 0
    env = dict(os.environ, LARIV_LOG_LEVEL="warn")
    daemon = subprocess.Popen(
        [LARIVD, "--port", str(PORT), "--monitor-port", str(MPORT), "--threads", "2",
         "--max-sessions", "5000", "--handshake-timeout-ms", "2000", "--frame-timeout-ms", "1000",
         "--heartbeat-ms", "0", "--drain-timeout-ms", "3000"], env=env)
    try:
        for _ in range(200):
            try:
                metric("lariv_sessions_open")
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.2)
        base_fds = fd_count(daemon.pid)
        stop = threading.Event()
        results = {}
        pairs = [threading.Thread(target=healthy_pair, args=(i, stop, results)) for i in range(4)]
        for t in pairs:
            t.start()
        time.sleep(0.3)
        t0 = time.time()
        holders = []
        for _ in range(2):
            p = subprocess.Popen([sys.executable, __file__, LARIVD, "--holder"],
                                 env=dict(os.environ, S5_PORT=str(PORT)), stdout=subprocess.PIPE)
            holders.append(p)
        counts = [0, 0, 0, 0]
        hammerers = [threading.Thread(target=hammer, args=(CYCLES // 2, counts)) for _ in range(2)]
        for t in hammerers:
            t.start()
        for p in holders:
            p.stdout.readline()
            p.send_signal(signal.SIGKILL)
            p.wait()
        for t in hammerers:
            t.join()
        elapsed = time.time() - t0
        stop.set()
        for t in pairs:
            t.join(30 * SCALE)
        assert daemon.poll() is None, "larivd died"
        # Back to baseline: fds and sessions (only the healthy pairs left, and they quit).
        deadline = time.time() + 2 * SCALE + 1
        while time.time() < deadline:
            if fd_count(daemon.pid) <= base_fds + 2 and metric("lariv_sessions_open") == 0:
                break
            time.sleep(0.05)
        fds, open_ = fd_count(daemon.pid), metric("lariv_sessions_open")
        lost = dup = acked_total = 0
        for idx, (acked, got, errors) in results.items():
            acked_total += len(acked)
            lost += len(acked - set(got))
            dup += len(got) - len(set(got))
        print(f"S5: {sum(counts[:3])} abrupt cycles (rst {counts[0]}, half-frame+FIN {counts[1]}, "
              f"send+rst {counts[2]}, connect errors {counts[3]}) + 200 connections of 2 "
              f"SIGKILLed processes in {elapsed:.1f} s ({sum(counts[:3]) / elapsed:.0f} cycles/s); "
              f"{acked_total} acked messages, lost {lost}, duplicated {dup}; fds {base_fds} -> {fds}; "
              f"sessions open {open_}")
        ok = (lost == 0 and dup == 0 and fds <= base_fds + 2 and open_ == 0 and acked_total > 0
              and len(results) == 4 and counts[3] == 0)
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=10 * SCALE)
        print(f"S5: larivd exit code after SIGTERM: {code}")
        ok = ok and code == 0
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        if daemon.poll() is None:
            daemon.kill()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "--holder":
        PORT = int(os.environ["S5_PORT"])
    sys.exit(main())
