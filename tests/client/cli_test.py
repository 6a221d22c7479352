#!/usr/bin/env python3
"""The `lariv` CLI as a user runs it, against a larivd started here on a free port.

Usage: cli_test.py <larivd> <lariv>
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "server"))
from harness import SCALE, free_port, listening, wait_for  # noqa: E402

LARIVD, LARIV = sys.argv[1], sys.argv[2]
ADMIN = "adm1n"
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def run(*args, env=None, stdin=None, timeout=30):
    """Runs lariv; returns (rc, stdout, stderr)."""
    p = subprocess.run([LARIV, *args], capture_output=True, text=True, env=env, input=stdin,
                       timeout=timeout * SCALE)
    return p.returncode, p.stdout, p.stderr


def make_certs(d):
    """A CA, a server certificate from it for 127.0.0.1 and localhost, and an unrelated CA."""
    sh = f"""set -eu
cd '{d}'
o() {{ openssl "$@" >/dev/null 2>&1; }}
o req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 30 -subj /CN=cli-ca
o req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other.key -out other.pem -days 30 -subj /CN=other
o req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout srv.key -out srv.csr -subj /CN=larivd
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > srv.ext
o x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -set_serial 7 -days 30 -extfile srv.ext -out srv.pem
"""
    subprocess.run(["sh", "-c", sh], check=True)


def main():
    port = free_port()
    tls_port = free_port()
    server = f"127.0.0.1:{port}"
    certs = tempfile.mkdtemp(prefix="lariv_cli_tls_")
    make_certs(certs)
    mport = free_port()
    d = subprocess.Popen([LARIVD, "--port", str(port), "--monitor-port", str(mport), "--admin-token", ADMIN,
                          "--log-level", "warn", "--tls-cert", f"{certs}/srv.pem", "--tls-key", f"{certs}/srv.key",
                          "--tls-port", str(tls_port)])

    listener = None
    try:
        check(wait_for(listening(port), 10 * SCALE), "larivd listens")
        env = dict(os.environ, LARIV_SERVER=server)

        # Terminal 1: lariv listen prints its id first, then each message.
        listener = subprocess.Popen([LARIV, "listen", "--name", "alice"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env)
        first = listener.stdout.readline().strip()
        check(len(first) == 32 and all(c in "0123456789abcdef" for c in first),
              f"listen prints its session id first: {first!r}")
        alice = first

        # Terminal 2: lariv send <id> hello --ack prints ok and exits 0.
        rc, out, err = run("send", alice, "hello", "--ack", env=env)
        check(rc == 0 and out.strip() == "ok", f"send --ack to a live session: rc={rc} out={out!r} err={err!r}")
        line = listener.stdout.readline().rstrip("\n")
        parts = line.split(" ", 1)
        check(len(parts) == 2 and len(parts[0]) == 32 and parts[1] == "hello",
              f"listen prints '<from> hello': {line!r}")

        # --count with a payload from stdin; every message arrives.
        rc, out, err = run("--server", server, "send", alice, "-", "--count", "3", "--ack", stdin="piped")
        check(rc == 0 and out.split() == ["ok", "ok", "ok"], f"send - --count 3 --ack: rc={rc} out={out!r}")
        got = [listener.stdout.readline().rstrip("\n").split(" ", 1)[1] for _ in range(3)]
        check(got == ["piped"] * 3, f"three piped messages arrive: {got!r}")

        # An unknown id: exit 1, verdict unknown_session.
        rc, out, err = run("send", "000000990000000100000003000000aa", "x", "--ack", env=env)
        check(rc == 1 and "unknown_session" in out, f"send to an unknown id: rc={rc} out={out!r}")

        # info on alice; info on an unknown id exits 1.
        rc, out, err = run("info", alice, "--json", env=env)
        check(rc == 0 and json.loads(out)["name"] == "alice", f"info --json: rc={rc} out={out!r}")
        rc, out, err = run("info", "000000990000000100000003000000aa", env=env)
        check(rc == 1 and "unknown_session" in err, f"info unknown: rc={rc} err={err!r}")

        # A second listener, then list --all with the admin token shows both.
        bob = subprocess.Popen([LARIV, "listen", "--name", "bob", "--json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
        bob_id = json.loads(bob.stdout.readline())["session"]
        rc, out, err = run("list", "--all", "--limit", "1", "--json", "--admin-token", ADMIN, env=env)
        names = {s["id"]: s["name"] for s in json.loads(out)} if rc == 0 else {}
        check(rc == 0 and names.get(alice) == "alice" and names.get(bob_id) == "bob",
              f"list --all --limit 1 follows next and lists both: rc={rc} out={out!r} err={err!r}")
        rc, out, err = run("list", "--all", "--name", "bo", "--admin-token", ADMIN, env=env)
        check(rc == 0 and bob_id in out and alice not in out, f"list --name bo: rc={rc} out={out!r}")
        rc, out, err = run("list", env=env)
        check(rc == 77, f"list without the admin token exits 77: rc={rc} err={err!r}")
        rc, out, err = run("list", "--admin-token", "wrong", env=env)
        check(rc == 77, f"a wrong admin token exits 77: rc={rc} err={err!r}")

        # lariv server: the monitoring endpoints, pretty-printed and as JSON.
        rc, out, err = run("server", "--monitor", f"127.0.0.1:{mport}", env=env)
        check(rc == 0 and "health     ok (HTTP 200)" in out and "alice" in out and "bob" in out
              and "2 live" in out, f"server: health, sessions and the top list: rc={rc} out={out!r} err={err!r}")
        rc, out, err = run("server", "--monitor", f"127.0.0.1:{mport}", "--top", "1", "--json", env=env)
        j = json.loads(out) if rc == 0 else {}
        check(rc == 0 and j["healthz"]["status"] == 200 and j["varz"]["sessions"] == 2
              and len(j["connz"]["sessions"]) == 1, f"server --json --top 1: rc={rc} out={out[:300]!r}")
        rc, out, err = run("server", "--monitor", f"127.0.0.1:{free_port()}", env=env)
        check(rc == 69 and "cannot connect to the monitor" in err, f"server, no monitor: exit 69: rc={rc} err={err!r}")

        # bob gets a binary payload in JSON (base64).
        rc, out, err = run("send", bob_id, "hi bob", "--ack", env=env)
        msg = json.loads(bob.stdout.readline())
        check(rc == 0 and msg["payload_base64"] == "aGkgYm9i" and msg["from"] != bob_id,
              f"listen --json prints from and payload_base64: {msg!r}")

        # kick bob: ok, and his listen ends.
        rc, out, err = run("kick", bob_id, "--admin-token", ADMIN, env=env)
        check(rc == 0 and out.strip() == "ok", f"kick: rc={rc} out={out!r} err={err!r}")
        try:
            brc = bob.wait(timeout=10 * SCALE)
        except subprocess.TimeoutExpired:
            bob.kill()
            brc = None
        check(brc is not None and brc != 0, f"the kicked listen exits non-zero: rc={brc}")
        rc, out, err = run("kick", bob_id, "--admin-token", ADMIN, env=env)
        check(rc == 1 and "stale_session" in out, f"kick a departed session: rc={rc} out={out!r}")

        # stats --json parses; ping answers.
        rc, out, err = run("stats", "--json", env=env)
        stats = json.loads(out) if rc == 0 else {}
        check(rc == 0 and stats.get("closed", {}).get("kicked") == 1, f"stats --json: rc={rc} out={out[:120]!r}")
        rc, out, err = run("ping", "--count", "3", "--interval", "10", env=env)
        check(rc == 0 and out.count("PONG from") == 3, f"ping --count 3: rc={rc} out={out!r}")

        # Usage errors exit 64: an unknown flag, a bad id, no subcommand, a bad address.
        for args in (["send", alice, "x", "--bogus"], ["send", "nothex", "x"], [], ["--server", "nohost", "ping"],
                     ["ping", "--count", "0"]):
            rc, out, err = run(*args, env=env)
            check(rc == 64, f"usage error {args}: rc={rc} err={err.strip()[:80]!r}")
        rc, out, err = run("--help")
        check(rc == 0 and "69" in out and "77" in out, "--help documents the exit codes")

        # A closed port: 69.
        rc, out, err = run("--server", f"127.0.0.1:{free_port()}", "ping")
        check(rc == 69, f"a closed port exits 69: rc={rc} err={err!r}")
        # A server that accepts but never answers: 75 after --timeout.
        mute = socket.socket()
        mute.bind(("127.0.0.1", 0))
        mute.listen(1)
        rc, out, err = run("--server", f"127.0.0.1:{mute.getsockname()[1]}", "--timeout", "300", "ping")
        mute.close()
        check(rc == 75, f"no answer within --timeout exits 75: rc={rc} err={err!r}")

        # TLS: listen with the CA from LARIV_TLS_CA (--tls turns TLS on), send with --tls-ca.
        tls_server = f"127.0.0.1:{tls_port}"
        tenv = dict(os.environ, LARIV_TLS_CA=f"{certs}/ca.pem")
        tls_listener = subprocess.Popen([LARIV, "--tls", "--server", tls_server, "listen", "--name", "tls"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=tenv)
        tls_id = tls_listener.stdout.readline().strip()
        check(len(tls_id) == 32, f"listen --tls prints its id: {tls_id!r}")
        rc, out, err = run("--server", tls_server, "--tls-ca", f"{certs}/ca.pem", "send", tls_id, "over tls", "--ack")
        check(rc == 0 and out.strip() == "ok", f"send over TLS (--tls-ca): rc={rc} out={out!r} err={err!r}")
        line = tls_listener.stdout.readline().rstrip("\n")
        check(line.endswith(" over tls"), f"the TLS listener gets it: {line!r}")
        rc, out, err = run("--server", tls_server, "--tls-ca", f"{certs}/other.pem", "ping", "--count", "1")
        check(rc == 69 and "certificate verify failed" in err, f"a wrong CA exits 69: rc={rc} err={err!r}")
        rc, out, err = run("--server", tls_server, "--tls-insecure", "ping", "--count", "1")
        check(rc == 0 and "warning" in err, f"--tls-insecure connects and warns: rc={rc} err={err!r}")
        rc, out, err = run("ping", "--count", "1", env=dict(tenv, LARIV_SERVER=server))
        check(rc == 0, f"LARIV_TLS_CA alone does not turn TLS on: rc={rc} err={err!r}")
        tls_listener.send_signal(signal.SIGTERM)
        check(tls_listener.wait(timeout=10 * SCALE) == 0, "the TLS listen exits 0 on SIGTERM")

        # SIGTERM ends listen with 0.
        listener.send_signal(signal.SIGTERM)
        lrc = listener.wait(timeout=10 * SCALE)
        check(lrc == 0, f"listen exits 0 on SIGTERM: rc={lrc} err={listener.stderr.read()!r}")
        listener = None
    finally:
        if listener is not None:
            listener.kill()
        d.send_signal(signal.SIGTERM)
        try:
            d.wait(timeout=15 * SCALE)
        except subprocess.TimeoutExpired:
            d.kill()
        shutil.rmtree(certs, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("all CLI checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
