"""Shared helpers for the tests that drive the larivd binary (s5, s7, s10, s11/s13, s14)."""
import os
import socket
import time
import urllib.request

# Time bounds are multiplied by this under the sanitizers (RELIABILITY.md 5: x5 TSan, x2 ASan).
SCALE = float(os.environ.get("LARIV_TIME_SCALE", "1"))


def free_port():
    """A loopback port that was free a moment ago."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def metric(mport, name):
    """One sample of a Prometheus metric (exact name and labels) from larivd's /metrics."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise KeyError(name)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def listening(port):
    """A predicate for wait_for(): something accepts TCP connections on 127.0.0.1:port."""
    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    return up


def wait_for(pred, timeout):
    """Polls pred() every 50 ms until it holds or `timeout` seconds pass; returns its last value."""
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def hello(port, name=b"x"):
    """Connects and handshakes; returns (socket, its file, session id as bytes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10 * SCALE)
    f = s.makefile("rb")
    s.sendall(b'HELLO {"name":"%s"}\r\n' % name)
    parts = f.readline().split()
    if not parts or parts[0] != b"+HELLO":
        raise ConnectionError(f"no +HELLO: {parts}")
    body = f.read(int(parts[1]))
    f.readline()
    return s, f, body.split(b'"session":"')[1][:32]
