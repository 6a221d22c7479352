"""Harness of the cluster integration tests (cluster_test.py): a throw-away etcd 3.4 member, larivd
nodes joined to it, and a small blocking client of the wire protocol (protocol/PROTOCOL.md).

Python 3 standard library only. Every time bound is multiplied by LARIV_TIME_SCALE (environment,
default 1; CMake sets it for the sanitizer builds). Every wait is a polling loop with a deadline,
and every failure says what was expected and what came.

etcd is required: when it is not on PATH (or $ETCD does not name it) the harness raises, it never
skips. /work/shared/CLUSTER.md (and the project's docs) describe the JSON gateway used here.
"""
import base64
import collections
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

SCALE = float(os.environ.get("LARIV_TIME_SCALE", "1") or "1")


def scaled(seconds):
    return seconds * SCALE


class TestFailure(AssertionError):
    pass


def fail(msg):
    raise TestFailure(msg)


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


# ---------------------------------------------------------------------------------------------
# Ports and waiting

_handed_out = set()


def free_port():
    """A loopback port that was free a moment ago, never the same one twice in this process."""
    for _ in range(100):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if p not in _handed_out:
            _handed_out.add(p)
            return p
    raise RuntimeError("no free loopback port found")


def wait_until(pred, timeout, what, interval=0.05):
    """Polls pred() (scaled timeout, seconds) until it returns a truthy value, which is returned.

    pred may raise; the exception counts as "not yet". On the deadline raises TestFailure naming
    `what` (the expectation) and the last value or exception seen (what came)."""
    end = time.monotonic() + scaled(timeout)
    last = None
    while True:
        try:
            v = pred()
            if v:
                return v
            last = repr(v)
        except TestFailure:
            raise
        except Exception as e:  # noqa: BLE001 - "not yet", reported on the deadline
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() >= end:
            raise TestFailure(f"timed out after {scaled(timeout):.1f} s waiting for {what}; last seen: {last}")
        time.sleep(interval)


def _tail(path, n=6000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"<cannot read {path}: {e}>"


# ---------------------------------------------------------------------------------------------
# etcd

def find_etcd():
    exe = os.environ.get("ETCD") or shutil.which("etcd")
    if not exe or not os.access(exe, os.X_OK):
        raise RuntimeError(
            "etcd not found on PATH (nor in $ETCD): the cluster tests need a real etcd 3.4 server. "
            "Install it with `scripts/deps.sh test` (Debian/Ubuntu package etcd-server, "
            "`apt-get install -y etcd-server etcd-client`), or set ETCD=/path/to/etcd. "
            "These tests never skip.")
    return exe


def _b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


def _prefix_end(prefix):
    b = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"


class Etcd:
    """One throw-away etcd member on free loopback client and peer ports, data in a temp dir."""

    def __init__(self, workdir=None, name="t"):
        self.exe = find_etcd()
        self.own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="lariv-etcd-")
        self.data_dir = os.path.join(self.dir, "etcd-data")
        self.log_path = os.path.join(self.dir, "etcd.log")
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc = None
        self._log = None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.client_port}"

    def start(self, timeout=20):
        check(self.proc is None or self.proc.poll() is not None, "etcd start(): already running")
        c, p = self.client_port, self.peer_port
        cmd = [self.exe, "--data-dir", self.data_dir, "--name", self.name,
               "--listen-client-urls", f"http://127.0.0.1:{c}", "--advertise-client-urls", f"http://127.0.0.1:{c}",
               "--listen-peer-urls", f"http://127.0.0.1:{p}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}",
               "--initial-cluster", f"{self.name}=http://127.0.0.1:{p}"]
        self._log = open(self.log_path, "ab")
        self._log.write(f"\n==== start {time.strftime('%H:%M:%S')}: {' '.join(cmd)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)

        def ready():
            if self.proc.poll() is not None:
                fail(f"etcd exited with status {self.proc.returncode} while starting; its log:\n{_tail(self.log_path)}")
            self.post("/v3/kv/range", {"key": _b64("/")}, timeout=1)
            return True
        wait_until(ready, timeout, f"etcd to answer POST /v3/kv/range on {self.endpoint}")
        return self

    def stop(self, timeout=15):
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            fail(f"etcd did not exit within {scaled(timeout):.0f} s of SIGTERM")

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def post(self, path, body, timeout=5):
        req = urllib.request.Request(self.endpoint + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read().decode() or "{}")

    def kvs(self, prefix):
        """The raw kvs under prefix: [{key(str), value(bytes), lease(str|None), create_revision...}]."""
        ans = self.post("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))})
        out = []
        for kv in ans.get("kvs", []):  # proto3: an empty result has no "kvs" at all
            out.append({"key": base64.b64decode(kv["key"]).decode("utf-8", "replace"),
                        "value": base64.b64decode(kv.get("value", "")),
                        "lease": kv.get("lease"),
                        "create_revision": int(kv.get("create_revision", "0")),
                        "mod_revision": int(kv.get("mod_revision", "0"))})
        return out

    def keys(self, prefix):
        """{key: value parsed as JSON} under prefix (a value that is not JSON: {"<raw>": text})."""
        out = {}
        for kv in self.kvs(prefix):
            try:
                out[kv["key"]] = json.loads(kv["value"].decode())
            except ValueError:
                out[kv["key"]] = {"<raw>": kv["value"].decode("utf-8", "replace")}
        return out

    def put(self, key, value, lease=None):
        body = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return self.post("/v3/kv/put", body)

    def grant(self, ttl):
        return self.post("/v3/lease/grant", {"TTL": ttl})["ID"]

    def revoke(self, lease):
        return self.post("/v3/lease/revoke", {"ID": str(lease)})

    def log_tail(self):
        return _tail(self.log_path)

    def close(self):
        self.kill()
        if self._log:
            self._log.close()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# larivd nodes

EXIT_CONFIG = 78


def nodes_prefix(cluster_name):
    return f"/lariv/{cluster_name}/nodes/"


class Node:
    """One larivd joined to a cluster. Ports are chosen once and kept across restart()."""

    def __init__(self, larivd, etcd_endpoint, node_id="auto", cluster_name="lariv", token="cluster-secret",
                 ttl=2, admin_token="adm1n", extra=(), workdir=None, label=None):
        self.larivd = larivd
        self.etcd_endpoint = etcd_endpoint
        self.node_id_arg = str(node_id)
        self.cluster_name = cluster_name
        self.token = token
        self.ttl = ttl
        self.admin_token = admin_token
        self.extra = list(extra)
        self.port = free_port()
        self.monitor_port = free_port()
        self.peer_port = free_port()
        self.dir = workdir or tempfile.mkdtemp(prefix="lariv-node-")
        self.label = label or f"node(id={node_id})"
        self.proc = None
        self.starts = 0
        self.stderr_path = None
        self._err = None

    # -- identity
    @property
    def peer_address(self):
        return f"127.0.0.1:{self.peer_port}"

    @property
    def client_address(self):
        return f"127.0.0.1:{self.port}"

    def args(self):
        a = [self.larivd, "--port", str(self.port), "--monitor-port", str(self.monitor_port),
             "--cluster-etcd", self.etcd_endpoint, "--cluster-name", self.cluster_name,
             "--node-id", self.node_id_arg, "--peer-address", "127.0.0.1", "--peer-port", str(self.peer_port),
             "--cluster-lease-ttl-s", str(self.ttl), "--threads", "2", "--log-level", "info",
             "--drain-timeout-ms", "2000"]
        if self.token is not None:
            a += ["--cluster-token", self.token]
        if self.admin_token:
            a += ["--admin-token", self.admin_token]
        return a + self.extra

    # -- life
    def start(self, wait="held", timeout=20):
        """Starts larivd; with wait (a lease state) polls /healthz?format=json until it says so."""
        check(self.proc is None or self.proc.poll() is not None, f"{self.label}: start() while running")
        self.starts += 1
        self.stderr_path = os.path.join(self.dir, f"larivd-{self.label}-{self.starts}.stderr".replace(" ", "_"))
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.args(), stdout=self._err, stderr=self._err)
        if wait:
            self.wait_lease(wait, timeout)
        return self

    def wait_lease(self, state="held", timeout=20):
        def ok():
            if self.proc.poll() is not None:
                fail(f"{self.label} exited with status {self.proc.returncode} while waiting for lease "
                     f"{state!r}; stderr:\n{self.stderr_tail()}")
            _, h = self.healthz()
            c = h.get("cluster") or {}
            return c.get("lease") == state and h
        return wait_until(ok, timeout, f"{self.label} /healthz?format=json cluster.lease == {state!r}")

    def stop(self, timeout=15):
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.exit_code
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            fail(f"{self.label} did not exit within {scaled(timeout):.0f} s of SIGTERM; stderr:\n{self.stderr_tail()}")

    def kill(self):
        """SIGKILL and reap (the process is gone when this returns)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def restart(self, wait="held", timeout=20):
        if self.running():
            self.stop()
        return self.start(wait=wait, timeout=timeout)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            return None

    @property
    def exit_code(self):
        return None if self.proc is None else self.proc.poll()

    @property
    def pid(self):
        return self.proc.pid

    def stderr_text(self):
        if self._err:
            self._err.flush()
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    def stderr_tail(self, n=6000):
        return _tail(self.stderr_path, n) if self.stderr_path else "<not started>"

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    # -- monitoring
    def _get(self, path, timeout=3):
        url = f"http://127.0.0.1:{self.monitor_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:  # 503 while draining still has a body
            return e.code, e.read().decode("utf-8", "replace")

    def healthz(self):
        """(HTTP status, JSON object) of /healthz?format=json."""
        code, body = self._get("/healthz?format=json")
        try:
            return code, json.loads(body)
        except ValueError:
            raise TestFailure(f"{self.label}: /healthz?format=json answered {code} with non-JSON {body[:300]!r}")

    def routez(self):
        code, body = self._get("/routez")
        check(code == 200, f"{self.label}: /routez answered {code}, expected 200: {body[:300]!r}")
        try:
            return json.loads(body)
        except ValueError:
            raise TestFailure(f"{self.label}: /routez is not JSON: {body[:300]!r}")

    def peers(self):
        """{peer node id: its /routez entry}."""
        return {int(p["node"]): p for p in self.routez().get("peers", [])}

    def metrics(self, name):
        """The value of one sample (exact name with labels, e.g. 'x_total{direction="out"}'), or None."""
        code, body = self._get("/metrics")
        check(code == 200, f"{self.label}: /metrics answered {code}")
        for line in body.splitlines():
            if line.startswith("#"):
                continue
            k, _, v = line.rpartition(" ")
            if k == name:
                return float(v)
        return None

    def node_id(self):
        """The node id this node says it holds (healthz cluster.node)."""
        _, h = self.healthz()
        return int((h.get("cluster") or {})["node"])

    def client(self, name="c", admin=False, **kw):
        return Client(self.port, name=name, auth=self.admin_token if admin else None, **kw)

    def describe(self):
        state = "running" if self.running() else f"exited {self.exit_code}"
        return (f"--- {self.label} ({state}; client {self.port}, monitor {self.monitor_port}, peer {self.peer_port})\n"
                f"    cmd: {' '.join(self.args())}\n--- stderr tail:\n{self.stderr_tail()}")

    def close(self):
        self.kill()
        if self._err:
            self._err.close()


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "WARNING: ThreadSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:")


class Cluster:
    """etcd plus nodes; a context manager that kills everything on exit and, when the block
    raised, prints every node's stderr and etcd's log."""

    def __init__(self, larivd, name="lariv", ttl=2, token="cluster-secret"):
        self.larivd = larivd
        self.name = name
        self.ttl = ttl
        self.token = token
        find_etcd()  # fails loudly before anything is created
        self.dir = tempfile.mkdtemp(prefix="lariv-cluster-")
        self.etcd = Etcd(workdir=self.dir)
        self.nodes = []

    def __enter__(self):
        self.etcd.start()
        return self

    def add(self, node_id="auto", start=True, wait="held", **kw):
        kw.setdefault("ttl", self.ttl)
        kw.setdefault("token", self.token)
        kw.setdefault("cluster_name", self.name)
        n = Node(self.larivd, self.etcd.endpoint, node_id=node_id, workdir=self.dir,
                 label=f"node{len(self.nodes) + 1}", **kw)
        self.nodes.append(n)
        if start:
            n.start(wait=wait)
        return n

    def node_keys(self):
        return self.etcd.keys(nodes_prefix(self.name))

    def wait_mesh(self, nodes=None, timeout=10):
        """Every given node's /routez lists every other given node as up."""
        nodes = nodes or [n for n in self.nodes if n.running()]

        def meshed():
            ids = {n: n.node_id() for n in nodes}
            for n in nodes:
                peers = n.peers()
                for m in nodes:
                    if m is n:
                        continue
                    p = peers.get(ids[m])
                    if not p or p.get("state") != "up":
                        return False
            return True
        wait_until(meshed, timeout, f"every node's /routez to show the other {len(nodes) - 1} peers up "
                   f"({', '.join(n.label for n in nodes)})")

    def dump(self):
        print("==== cluster state at failure ====", flush=True)
        for n in self.nodes:
            print(n.describe(), flush=True)
            if n.running():
                try:
                    print(f"    /routez: {json.dumps(n.routez())}")
                except Exception as e:  # noqa: BLE001
                    print(f"    /routez: {e}")
        print(f"--- etcd ({'running' if self.etcd.running() else 'stopped'}) log tail:\n{self.etcd.log_tail()}",
              flush=True)

    def __exit__(self, et, ev, tb):
        if et is not None:
            self.dump()
        else:
            # A clean end: every node still running must drain and exit 0 on SIGTERM, and no
            # start of any node may have printed a sanitizer report (the sanitizer builds run
            # this suite against their larivd: a race or a leak anywhere in the cluster code
            # fails the case that found it).
            for n in self.nodes:
                if n.running():
                    code = n.stop()
                    if code != 0:
                        self.dump()
                        fail(f"{n.label}: exit status {code} after SIGTERM, expected 0; stderr:\n{n.stderr_tail()}")
            for n in self.nodes:
                for i in range(1, n.starts + 1):
                    path = os.path.join(n.dir, f"larivd-{n.label}-{i}.stderr".replace(" ", "_"))
                    try:
                        text = open(path, "rb").read().decode("utf-8", "replace")
                    except OSError:
                        continue
                    for marker in SANITIZER_MARKERS:
                        if marker in text:
                            at = text.index(marker)
                            print(f"(logs kept in {self.dir})")
                            fail(f"{n.label} start {i}: sanitizer report ({marker}):\n{text[max(0, at - 200):at + 4000]}")
        for n in self.nodes:
            n.close()
        self.etcd.close()
        if et is None:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"(logs kept in {self.dir})")
        return False


# ---------------------------------------------------------------------------------------------
# Protocol client

Frame = collections.namedtuple("Frame", "kind args body")  # kind: MSG ACK +OK -ERR +HELLO ... PONG EOF
BODY_KINDS = {"+HELLO", "+INFO", "+LIST", "+STATS"}


class ProtocolError(TestFailure):
    pass


class Parser:
    """Incremental frame parser of server-to-client frames (PROTOCOL.md 1 and 3)."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data

    def next(self):
        """One complete frame from the buffer, or None if more bytes are needed."""
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                if len(self.buf) > 1 << 20:
                    raise ProtocolError(f"a server line of over 1 MiB without a newline: {bytes(self.buf[:80])!r}...")
                return None
            line = bytes(self.buf[:nl]).rstrip(b"\r")
            if not line.strip():
                del self.buf[:nl + 1]
                continue
            parts = line.split()
            verb = parts[0].decode("ascii", "replace")
            kind = verb.upper() if not verb.startswith(("+", "-")) else verb[0] + verb[1:].upper()
            args = [p.decode("ascii", "replace") for p in parts[1:]]
            if kind == "MSG" or kind in BODY_KINDS:
                cnt = args[-1] if args else ""
                if kind == "MSG" and len(args) != 2 or not cnt.isdigit():
                    raise ProtocolError(f"malformed body line from the server: {line!r}")
                n = int(cnt)
                start = nl + 1
                if len(self.buf) < start + n + 1:
                    return None
                body = bytes(self.buf[start:start + n])
                rest = self.buf[start + n:start + n + 2]
                if rest[:1] == b"\n":
                    end = start + n + 1
                elif rest == b"\r\n":
                    end = start + n + 2
                elif rest == b"\r":
                    return None  # the \n is still on its way
                else:
                    raise ProtocolError(f"body of {line!r} ({n} bytes) not followed by a line end but {bytes(rest)!r}")
                del self.buf[:end]
                return Frame(kind, args, body)
            del self.buf[:nl + 1]
            return Frame(kind, args, None)


class Client:
    """A blocking client of one session. Frames read while waiting for something else are kept:
    MSGs in .msgs, ACKs in .acks (token -> code), other replies in .replies (in order). Server
    PINGs are answered at once."""

    def __init__(self, port, name="c", auth=None, host="127.0.0.1", timeout=10, rcvbuf=None, hello=True):
        self.port = port
        self.name = name
        end = time.monotonic() + scaled(timeout)
        while True:
            try:
                s = socket.socket()
                if rcvbuf:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                s.settimeout(scaled(timeout))
                s.connect((host, port))
                break
            except OSError as e:
                s.close()
                if time.monotonic() > end:
                    raise TestFailure(f"cannot connect to larivd on {host}:{port}: {e}")
                time.sleep(0.05)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = s
        self.parser = Parser()
        self.msgs = collections.deque()
        self.acks = {}
        self.ack_order = []
        self.replies = collections.deque()
        self.eof = False
        self.id = None
        self.node = None
        self.hello_body = None
        if hello:
            self.hello(name, auth, timeout)

    def fileno(self):
        return self.sock.fileno()

    # -- writing
    def send_raw(self, data):
        self.sock.sendall(data)

    def hello(self, name, auth=None, timeout=10):
        h = {"name": name}
        if auth:
            h["auth"] = auth
        self.send_raw(b"HELLO " + json.dumps(h, separators=(",", ":")).encode() + b"\r\n")
        f = self.reply(timeout)
        if f.kind != "+HELLO":
            raise TestFailure(f"HELLO to port {self.port}: expected +HELLO, got {f}")
        self.hello_body = json.loads(f.body)
        self.id = self.hello_body["session"]
        self.node = self.hello_body.get("node")
        check(isinstance(self.id, str) and len(self.id) == 32, f"+HELLO session is not 32 hex: {self.hello_body}")
        return self.hello_body

    @staticmethod
    def send_frame(to, payload, token=None):
        if isinstance(payload, str):
            payload = payload.encode()
        tok = b" " + token.encode() if token else b""
        return b"SEND %s %d%s\r\n%s\r\n" % (to.encode(), len(payload), tok, payload)

    def send(self, to, payload, token=None):
        self.send_raw(self.send_frame(to, payload, token))

    def ping(self):
        self.send_raw(b"PING\r\n")

    # -- reading
    def _dispatch(self, f):
        if f.kind == "PING":
            try:
                self.send_raw(b"PONG\r\n")
            except OSError:
                pass
            return
        if f.kind == "MSG":
            self.msgs.append((f.args[0], f.body))
        elif f.kind == "ACK":
            if len(f.args) < 2:
                raise ProtocolError(f"ACK without token and code: {f}")
            tok = f.args[0]
            if tok in self.acks:
                raise ProtocolError(f"a second ACK for token {tok}: {self.acks[tok]!r} then {f.args[1]!r}")
            self.acks[tok] = f.args[1].lower()
            self.ack_order.append(tok)
        else:
            self.replies.append(f)

    def pump(self, timeout):
        """Reads what arrives within timeout (unscaled seconds; 0 = only what is there now) and
        dispatches it. Returns False at EOF."""
        if self.eof:
            return False
        r, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not r:
            return True
        try:
            data = self.sock.recv(1 << 16)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        except (socket.timeout, BlockingIOError):
            return True
        if not data:
            self.eof = True
            return False
        self.parser.feed(data)
        while True:
            f = self.parser.next()
            if f is None:
                break
            self._dispatch(f)
        return True

    def _until(self, pred, timeout, what):
        end = time.monotonic() + scaled(timeout)
        while True:
            v = pred()
            if v is not None:
                return v
            left = end - time.monotonic()
            if self.eof:
                raise TestFailure(f"session {self.id} ({self.name}): EOF while waiting for {what}; "
                                  f"unread replies {list(self.replies)}, {len(self.msgs)} MSGs")
            if left <= 0:
                raise TestFailure(f"session {self.id} ({self.name}): no {what} within {scaled(timeout):.1f} s; "
                                  f"got meanwhile replies {list(self.replies)}, {len(self.msgs)} MSGs, "
                                  f"acks {dict(list(self.acks.items())[-5:])}")
            self.pump(min(left, 0.2))

    def reply(self, timeout=5):
        """The next reply that is not MSG/ACK/PING (+OK, -ERR, +INFO, PONG...)."""
        return self._until(lambda: self.replies.popleft() if self.replies else None, timeout, "reply")

    def expect_ack(self, token, timeout=5):
        """The code ('ok', 'stale_session', ...) of the ACK of token."""
        return self._until(lambda: self.acks.get(token), timeout, f"ACK {token}")

    def recv_msg(self, timeout=5):
        """(sender id, payload bytes) of the next MSG."""
        return self._until(lambda: self.msgs.popleft() if self.msgs else None, timeout, "MSG")

    def request(self, line, timeout=5):
        self.send_raw(line.encode() + b"\r\n")
        return self.reply(timeout)

    def info(self, sid, timeout=5):
        """The +INFO JSON of sid, or the -ERR Frame."""
        f = self.request(f"INFO {sid}", timeout)
        if f.kind == "+INFO":
            return json.loads(f.body)
        return f

    def kick(self, sid, timeout=5):
        return self.request(f"KICK {sid}", timeout)

    def round_trip(self, timeout=5):
        """PING -> PONG: everything the server queued to us before the PONG has been read."""
        f = self.request("PING", timeout)
        check(f.kind == "PONG", f"session {self.id}: expected PONG, got {f}")

    def wait_closed(self, timeout=5):
        """Reads until EOF; returns the replies seen on the way (e.g. -ERR not_authorized kicked)."""
        end = time.monotonic() + scaled(timeout)
        while not self.eof:
            left = end - time.monotonic()
            if left <= 0:
                raise TestFailure(f"session {self.id} ({self.name}): expected the server to close it within "
                                  f"{scaled(timeout):.1f} s; it is still open (replies {list(self.replies)})")
            self.pump(min(left, 0.2))
        return list(self.replies)

    def quit(self, timeout=5):
        f = self.request("QUIT", timeout)
        check(f.kind == "+OK", f"session {self.id}: QUIT expected +OK bye, got {f}")
        self.wait_closed(timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def id_node(sid):
    return int(sid[0:8], 16)


def id_epoch(sid):
    return int(sid[8:16], 16)


def forged_id(node, epoch, low=0x0123456789ABCDEF):
    return f"{node:08x}{epoch:08x}{low:016x}"
