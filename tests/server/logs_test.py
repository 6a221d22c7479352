#!/usr/bin/env python3
"""larivd's logs and start-up errors, on the real binary (README "Logging", server/DESIGN.md).

1. JSON lines under hostile input: larivd runs with --log-format json at debug level and gets
   normal traffic, HELLO names with quotes, backslashes, control bytes and a UTF-8 sequence cut
   in two, invalid UTF-8, bad commands, auth failures, a KICK, an oversized frame, an over-long
   line, SIGHUPs with a bad config file (a value with a `"`, then bytes that are not UTF-8), a
   good SIGHUP, then SIGTERM. EVERY stderr line must parse as a JSON object with string ts, level
   and msg, and the start-up, close, auth, reload and drain lines carry their fields.
2. A port in use: each listener (client, monitor, TLS if the openssl CLI is there) names itself
   and its address, and larivd exits 69; the same in JSON lines.
3. --listen-address / --monitor-address localhost resolve (the first address); a name that does
   not resolve exits 78 naming the key and the name, at start and with --check-config.
4. --help lists every setting's flag, LARIV_* variable, JSON key and default, and the exit codes.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from harness import SCALE, free_port, listening, wait_for

LARIVD = sys.argv[1]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)


def clean_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("LARIV_")}


def start(args, **kw):
    return subprocess.Popen([LARIVD] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=clean_env(), **kw)


def wait_port(port):
    return wait_for(listening(port), 15 * SCALE)


class conn:
    """A blocking protocol client on raw bytes."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10 * SCALE)
        self.f = self.s.makefile("rb")

    def send(self, data):
        self.s.sendall(data)

    def line(self):
        return self.f.readline()

    def hello(self, args):
        """HELLO <args>; returns the session id (str) or the -ERR line (bytes)."""
        self.send(b"HELLO " + args + b"\r\n")
        parts = self.line().split()
        if not parts or parts[0] != b"+HELLO":
            return b" ".join(parts)
        body = json.loads(self.f.read(int(parts[1])))
        self.line()
        return body["session"]

    def until_closed(self):
        """Reads until EOF; returns everything read."""
        out = b""
        try:
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except OSError:
            pass
        return out

    def close(self):
        self.s.close()


def parse_lines(err, where):
    """Every line of `err` as a JSON object with ts/level/msg; the failures are reported."""
    out = []
    for raw in err.split(b"\n"):
        if raw == b"":
            continue
        try:
            j = json.loads(raw.decode("utf-8"))  # strict: invalid UTF-8 fails here
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            check(False, f"{where}: not a JSON line ({e}): {raw!r}")
            continue
        ok = (isinstance(j, dict) and isinstance(j.get("ts"), str) and isinstance(j.get("level"), str)
              and isinstance(j.get("msg"), str))
        check(ok, f"{where}: no ts/level/msg strings: {raw!r}")
        if ok:
            check(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", j["ts"]) is not None,
                  f"{where}: ts not ISO 8601: {j['ts']}")
            out.append(j)
    return out


def find(lines, msg, **fields):
    for j in lines:
        if j["msg"] == msg and all(j.get(k) == v for k, v in fields.items()):
            return j
    return None


# --------------------------------------------------------------------------------- 1. JSON lines

def json_lines_under_hostile_input():
    port, mport = free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="lariv-logs-")
    cfg = os.path.join(tmp, "larivd.json")
    with open(cfg, "w") as f:
        json.dump({"log_level": "debug", "log_format": "json"}, f)
    d = start(["--config", cfg, "--port", str(port), "--monitor-port", str(mport), "--threads", "2",
               "--node-id", "7", "--auth-token", "tok", "--admin-token", "adm", "--heartbeat-ms", "0",
               "--max-payload", "1024", "--max-queue-bytes", "4096", "--max-sessions-per-ip", "50",
               "--idle-timeout-ms", "60000"])
    try:
        if not wait_port(port):
            check(False, "larivd (json) did not come up")
            return
        # Normal traffic: two clients route a message, one quits.
        a, b = conn(port), conn(port)
        ida = a.hello(b'{"name":"alice","auth":"tok"}')
        idb = b.hello(b'{"name":"bob","auth":"tok"}')
        check(isinstance(ida, str) and isinstance(idb, str), f"normal HELLOs: {ida!r} {idb!r}")
        a.send(b"SEND %s 5 t1\r\nhello\r\n" % idb.encode())
        check(a.line().startswith(b"ACK t1 ok"), "SEND acked")
        check(b.line().startswith(b"MSG "), "MSG received")
        b.f.read(7)
        # Hostile names: quotes, backslashes, control bytes, an escape sequence, a newline, and a
        # 2-byte UTF-8 sequence cut by the server's 128-byte name bound.
        hostile_name = 'q"b\\s\x01\x1b[31m\nx=1 ' + "a" * 111 + "\u00e9"
        assert len(hostile_name.encode()) == 129
        h = conn(port)
        idh = h.hello(json.dumps({"name": hostile_name, "auth": "tok"}).encode())
        check(isinstance(idh, str), f"hostile HELLO accepted: {idh!r}")
        # Invalid UTF-8 and raw control bytes in HELLO (refused as bad_json), bad commands.
        x = conn(port)
        x.send(b'HELLO {"name":"\xff\xfe\xc3","auth":"tok"}\r\n')
        x.line()
        x.send(b'BOGUS "quoted" \\ \x01\x02\xff\r\n')
        x.line()
        x.send(b"HELLO {\"name\":\"a\x07b\"}\r\n")
        x.line()
        # Auth failures (logged with the peer's address, one line a second at most).
        for _ in range(3):
            check(x.hello(b'{"auth":"nope\\"\\\\"}').startswith(b"-ERR not_authorized"), "bad token refused")
        # An admin kicks the hostile session.
        adm = conn(port)
        check(isinstance(adm.hello(b'{"name":"admin","auth":"adm"}'), str), "admin HELLO")
        adm.send(b"KICK %s\r\n" % idh.encode())
        check(adm.line().startswith(b"+OK"), "KICK answered +OK")
        h.until_closed()
        # An oversized frame (max_payload 1024) and an over-long line (max_line 4096): fatal.
        o = conn(port)
        check(isinstance(o.hello(b'{"name":"big","auth":"tok"}'), str), "oversized sender HELLO")
        o.send(b"SEND %s 5000 t2\r\n" % ida.encode())
        check(b"frame_too_large" in o.until_closed(), "oversized frame refused")
        ll = conn(port)
        ll.send(b"HELLO " + b"x" * 5000 + b"\r\n")
        ll.until_closed()
        # SIGHUP with a bad value holding a quote, then with bytes that are not UTF-8, then good.
        with open(cfg, "w") as f:
            f.write('{"log_level": "de\\"bug", "log_format": "json"}')
        d.send_signal(signal.SIGHUP)
        time.sleep(0.3 * SCALE)
        with open(cfg, "wb") as f:
            f.write(b'{"log_level": "\xff\xfe\x01", "log_format": "json"}')
        d.send_signal(signal.SIGHUP)
        time.sleep(0.3 * SCALE)
        with open(cfg, "wb") as f:
            f.write(b'{"log_level": "debug", "log_format": "json", "max_sessions": 5000}')
        d.send_signal(signal.SIGHUP)
        time.sleep(0.3 * SCALE)
        a.send(b"QUIT\r\n")
        a.until_closed()
        d.send_signal(signal.SIGTERM)
        _, err = d.communicate(timeout=30 * SCALE)
        check(d.returncode == 0, f"json run exits 0 after SIGTERM: {d.returncode}")
        for c in (b, x, adm, o, ll):
            c.close()
    finally:
        if d.poll() is None:
            d.kill()
            d.communicate()
        shutil.rmtree(tmp, ignore_errors=True)

    lines = parse_lines(err, "json run")
    print(f"json run: {len(lines)} lines", flush=True)
    for j in lines:
        check(j.get("node") == 7, f"node on every line: {j}")
    st = find(lines, "larivd started")
    check(st is not None, "a start-up line")
    if st:
        want = {"version": str, "config": str, "listen": str, "tls": str, "monitor": str,
                "client_auth": bool, "admin_auth": bool, "tls_client_certs": bool,
                "max_sessions": int, "max_sessions_per_ip": int, "max_payload": int,
                "max_queue_bytes": int, "idle_timeout_ms": int, "handshake_timeout_ms": int,
                "threads": int, "epoch": int, "pid": int}
        for k, t in want.items():
            check(isinstance(st.get(k), t), f"start-up line: {k} is a {t.__name__}: {st}")
        check(st.get("config") == cfg, "start-up: the config file")
        check(st.get("listen") == f"127.0.0.1:{port}", "start-up: listen address")
        check(st.get("monitor") == f"127.0.0.1:{mport}", "start-up: monitor address")
        check(st.get("tls") == "off", "start-up: TLS off")
        check(st.get("client_auth") is True and st.get("admin_auth") is True, "start-up: auth on")
        check(st.get("max_payload") == 1024 and st.get("max_queue_bytes") == 4096, "start-up: limits")
        check(st.get("max_sessions_per_ip") == 50 and st.get("idle_timeout_ms") == 60000,
              "start-up: per-IP limit and idle timeout")
        check("tok" not in json.dumps(st) and "adm" not in json.dumps(st).replace("admin_auth", ""),
              "start-up: no token in the log")
    kick = find(lines, "session closed", reason="kicked")
    check(kick is not None, "a close line for the kick")
    if kick:
        check(kick.get("session") == idh, f"close: session id {kick.get('session')} == {idh}")
        check(re.fullmatch(r"127\.0\.0\.1:\d+", kick.get("remote", "")) is not None, "close: remote")
        expected = hostile_name.encode()[:128].decode("utf-8", "replace")
        check(kick.get("name") == expected, f"close: the hostile name round-trips: {kick.get('name')!r}")
        for k in ("duration_ms", "msgs_in", "msgs_out"):
            check(isinstance(kick.get(k), int), f"close: {k}")
    check(find(lines, "session closed", reason="protocol_error") is not None,
          "a close line for the oversized frame / long line")
    auth = find(lines, "HELLO auth failed")
    check(auth is not None and re.fullmatch(r"127\.0\.0\.1:\d+", auth.get("remote", "")) is not None
          and isinstance(auth.get("auth_failures"), int), f"auth failure line: {auth}")
    rejected = [j for j in lines if j["msg"].startswith("SIGHUP: configuration rejected")]
    check(len(rejected) == 2, f"two rejected reloads: {rejected}")
    check(any('de"bug' in j.get("error", "") for j in rejected), "the rejected value with its quote")
    check(any("\ufffd" in j.get("error", "") for j in rejected),
          "the parse error's bytes that are not UTF-8, replaced by U+FFFD")
    rel = find(lines, "SIGHUP: reloaded log level, limits and TLS certificates")
    check(rel is not None and rel.get("max_sessions") == 5000 and rel.get("log_level") == "debug",
          f"reload line: {rel}")
    dr = find(lines, "draining")
    check(dr is not None and isinstance(dr.get("sessions"), int) and dr.get("drain_timeout_ms") == 8000,
          f"drain line: {dr}")
    check(find(lines, "draining on signal (send it again to exit at once)", signal="SIGTERM") is not None,
          "signal line")
    check(find(lines, "larivd stopped") is not None, "stopped line")


# ------------------------------------------------------------------------ 2. a port already in use

def port_in_use():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    p = busy.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="lariv-logs-")
    try:
        cases = [("client", ["--port", str(p), "--monitor-port", "0"]),
                 ("monitor", ["--port", "0", "--monitor-port", str(p)])]
        if shutil.which("openssl"):
            crt, key = os.path.join(tmp, "c.pem"), os.path.join(tmp, "c.key")
            r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                                "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-keyout", key,
                                "-out", crt, "-subj", "/CN=localhost"], capture_output=True)
            if r.returncode == 0:
                cases.append(("TLS", ["--port", "0", "--monitor-port", "0", "--tls-cert", crt,
                                      "--tls-key", key, "--tls-port", str(p)]))
        else:
            print("no openssl CLI: the TLS listener case is skipped", flush=True)
        for name, args in cases:
            r = subprocess.run([LARIVD] + args, capture_output=True, env=clean_env(), timeout=30 * SCALE)
            text = r.stderr.decode(errors="replace")
            want = f"cannot start: {name} listener 127.0.0.1:{p}: bind: Address already in use"
            check(r.returncode == 69, f"{name} port in use exits 69: {r.returncode} {text!r}")
            check(want in text, f"{name} port in use names the listener and address: {text!r}")
            r = subprocess.run([LARIVD, "--log-format", "json"] + args, capture_output=True,
                               env=clean_env(), timeout=30 * SCALE)
            check(r.returncode == 69, f"{name} port in use (json) exits 69")
            lines = parse_lines(r.stderr, f"{name} port in use (json)")
            crit = [j for j in lines if j["level"] == "critical"]
            check(len(crit) == 1 and crit[0]["msg"] == want and crit[0].get("listener") == name
                  and crit[0].get("address") == f"127.0.0.1:{p}" and crit[0].get("exit") == 69,
                  f"{name} port in use (json) line: {crit}")
    finally:
        busy.close()
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- 3. names, resolved

def addresses_by_name():
    port, mport = free_port(), free_port()
    d = start(["--listen-address", "localhost", "--port", str(port), "--monitor-address", "localhost",
               "--monitor-port", str(mport), "--threads", "1", "--log-format", "json"])
    try:
        lines = []
        ok = wait_port(port)
        if ok:
            c = conn(port)
            check(isinstance(c.hello(b'{"name":"n"}'), str), "localhost: HELLO")
            c.close()
        d.send_signal(signal.SIGTERM)
        _, err = d.communicate(timeout=30 * SCALE)
        lines = parse_lines(err, "localhost run")
        st = find(lines, "larivd started")
        check(ok and d.returncode == 0, f"--listen-address localhost serves and exits 0: {d.returncode} {err!r}")
        check(st is not None and st.get("listen") in (f"127.0.0.1:{port}", f"[::1]:{port}")
              and st.get("monitor") in (f"127.0.0.1:{mport}", f"[::1]:{mport}"),
              f"localhost: the start-up line shows the resolved addresses: {st}")
    finally:
        if d.poll() is None:
            d.kill()
            d.communicate()
    for key in ("listen-address", "monitor-address"):
        for extra in ([], ["--check-config"]):
            r = subprocess.run([LARIVD, "--" + key, "no-such-host.invalid", "--port", "0",
                                "--monitor-port", str(free_port())] + extra,
                               capture_output=True, env=clean_env(), timeout=60 * SCALE)
            text = r.stderr.decode(errors="replace")
            check(r.returncode == 78, f"--{key} no-such-host.invalid {extra} exits 78: {r.returncode} {text!r}")
            check(key.replace("-", "_") in text and "no-such-host.invalid" in text and "resolve" in text,
                  f"--{key}: the message names the key and the name: {text!r}")


# ------------------------------------------------------------------------------------- 4. --help

def help_lists_every_setting():
    h = subprocess.run([LARIVD, "--help"], capture_output=True, env=clean_env(), timeout=30 * SCALE)
    check(h.returncode == 0, "--help exits 0")
    text = h.stdout.decode()
    p = subprocess.run([LARIVD, "--print-config"], capture_output=True, env=clean_env(), timeout=30 * SCALE)
    cfg = json.loads(p.stdout)
    # One block per option: its line, and the description on the next one when CLI11 puts it
    # there (a long flag).
    blocks = []
    for l in text.splitlines():
        if re.match(r"  -", l):
            blocks.append(l.strip())
        elif blocks and l.startswith("   ") and not re.match(r"\s*-", l):
            blocks[-1] += " " + l.strip()
    keys = [(k, v, k) for k, v in cfg.items() if k != "limits"]
    keys += [(k, v, "limits." + k) for k, v in cfg["limits"].items()]
    check(len(keys) >= 38, f"print-config has every key: {len(keys)}")
    for key, default, json_key in keys:
        flag = "--" + key.replace("_", "-")
        env = "LARIV_" + key.upper()
        lines = [l for l in blocks if re.match(r"(\S+,)?" + re.escape(flag) + r"(?![\w-])", l)]
        check(len(lines) == 1, f"--help: one line for {flag}")
        if lines:
            l = lines[0]
            check(f"env {env};" in l, f"--help {flag}: {env}")
            check(f"JSON {json_key}" in l, f"--help {flag}: JSON key {json_key}")
            check(f"default {json.dumps(default)};" in l, f"--help {flag}: default {json.dumps(default)}: {l}")
    for code, word in (("0", "ok"), ("64", "usage"), ("69", "listener"), ("70", "internal"),
                       ("78", "configuration")):
        check(re.search(rf"\b{code} [^;]*{word}", text) is not None, f"--help: exit code {code} ({word})")


def main():
    json_lines_under_hostile_input()
    port_in_use()
    addresses_by_name()
    help_lists_every_setting()
    if failures:
        print(f"{len(failures)} failures", flush=True)
        sys.exit(1)
    print("logs: ok", flush=True)


if __name__ == "__main__":
    main()
