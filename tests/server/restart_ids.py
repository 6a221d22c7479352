#!/usr/bin/env python3
"""Ids across restarts (issue 10): no two starts of one node issue the same session id.

Starts the larivd binary (argv[1]) on one fixed port and node id with no boot_epoch configured,
HELLOs two clients, checks that each routes to the other, and that SENDs to every id of the runs
before answer unknown_session (another epoch: not issued by this boot); then stops it (SIGKILL on
even runs, a crash loop; SIGTERM on odd ones) and starts it again at once, RESTARTS times
(default 100). Passes when no id was ever issued twice, no two starts shared a boot epoch and no
old id ever reached a new session.
"""
import os
import signal
import socket
import subprocess
import sys
import time

from harness import SCALE, free_port

LARIVD = sys.argv[1]
RESTARTS = int(os.environ.get("RESTARTS", "100"))


def connect(port, deadline):
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10 * SCALE)
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.01)


class Client:
    def __init__(self, port, deadline):
        self.s = connect(port, deadline)
        self.f = self.s.makefile("rb")
        self.s.sendall(b'HELLO {"name":"restart"}\r\n')
        parts = self.f.readline().split()
        if not parts or parts[0] != b"+HELLO":
            raise AssertionError(f"no +HELLO: {parts}")
        body = self.f.read(int(parts[1]))
        self.f.readline()
        self.id = body.split(b'"session":"')[1][:32].decode()

    def line(self):
        return self.f.readline().rstrip(b"\r\n").decode()

    def send(self, to, payload, token):
        self.s.sendall(b"SEND %s %d %s\r\n%s\r\n" % (to.encode(), len(payload), token.encode(), payload))

    def close(self):
        self.f.close()
        self.s.close()


def main():
    port = free_port()
    issued = {}    # id -> run
    epochs = {}    # epoch hex -> run
    old_ids = []   # ids of the runs before this one (a sample is checked each run)
    failures = []
    for run in range(RESTARTS):
        daemon = subprocess.Popen([LARIVD, "--port", str(port), "--monitor-port", "0", "--node-id", "9",
                                   "--threads", "1", "--heartbeat-ms", "0", "--log-level", "error",
                                   "--drain-timeout-ms", "1000"])
        try:
            deadline = time.time() + 20 * SCALE
            a = Client(port, deadline)
            b = Client(port, deadline)
            for c in (a, b):
                if c.id in issued:
                    failures.append(f"run {run}: id {c.id} was issued before, in run {issued[c.id]}")
                issued[c.id] = run
            epoch = a.id[8:16]
            if b.id[8:16] != epoch:
                failures.append(f"run {run}: two epochs in one boot: {a.id} {b.id}")
            if epoch in epochs:
                failures.append(f"run {run}: boot epoch {epoch} repeats run {epochs[epoch]}")
            if epoch == "00000000":
                failures.append(f"run {run}: boot epoch 0")
            epochs[epoch] = run
            # A routes to B: the new ids work.
            a.send(b.id, b"ping", "t0")
            ack = a.line()
            msg = b.line()
            if ack != "ACK t0 ok" or not msg.startswith(f"MSG {a.id} 4"):
                failures.append(f"run {run}: routing between the new sessions failed: {ack!r} {msg!r}")
            else:
                b.line()  # the payload line
            # Ids of earlier runs: the last run's (the ones a client most likely still holds),
            # and a spread of older ones. None may reach anyone: unknown_session.
            sample = old_ids[-2:] + old_ids[:-2][::7]
            for k, old in enumerate(sample):
                a.send(old, b"stale", f"o{k}")
                got = a.line()
                if got != f"ACK o{k} unknown_session":
                    failures.append(f"run {run}: SEND to old id {old} (run {issued[old]}) got {got!r}")
            b.s.settimeout(0.05 * SCALE)
            try:
                extra = b.f.readline()
                if extra:
                    failures.append(f"run {run}: an old id reached a new session: {extra!r}")
            except (socket.timeout, TimeoutError):
                pass
            old_ids += [a.id, b.id]
            a.close()
            b.close()
        finally:
            if run % 2 == 0:
                daemon.send_signal(signal.SIGKILL)
            else:
                daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=30 * SCALE)
            if run % 2 == 1 and code != 0:
                failures.append(f"run {run}: SIGTERM exit code {code}")
        if len(failures) > 20:
            break
    print(f"restart_ids: {RESTARTS} starts, {len(issued)} ids, {len(epochs)} epochs")
    for f in failures:
        print("FAIL:", f)
    if len(issued) != 2 * RESTARTS or len(epochs) != RESTARTS:
        failures.append("not every start was checked")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
