#!/usr/bin/env python3
"""`lariv bench` as a user runs it: every mode briefly against a larivd started here, and churn and
route against a nats-server started here. Figures are checked for sanity only (messages > 0, no
errors, percentiles in order, RSS per session > 0), never judged.

Usage: bench_test.py <larivd> <lariv>
nats-server (Debian package nats-server, /usr/sbin/nats-server, `scripts/deps.sh test`) is
required: without it the test fails, it does not skip.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "server"))
from harness import SCALE, free_port, listening, wait_for  # noqa: E402

LARIVD, LARIV = sys.argv[1], sys.argv[2]
# Debian's package puts it in /usr/sbin (not on a user's PATH); LARIV_NATS_SERVER overrides.
NATS = (os.environ.get("LARIV_NATS_SERVER") or shutil.which("nats-server")
        or next((p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if os.path.exists(p)),
                "/usr/sbin/nats-server"))
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def bench(*args, timeout=60):
    """Runs lariv bench; returns (rc, parsed --json or None, stderr)."""
    p = subprocess.run([LARIV, "bench", *args, "--json"], capture_output=True, text=True,
                       timeout=timeout * SCALE)
    try:
        j = json.loads(p.stdout)
    except ValueError:
        j = None
    return p.returncode, j, p.stderr


def ordered(lat):
    return 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]


def good(rc, j, err, what):
    ok = rc == 0 and j is not None and j.get("ok") is True and j.get("errors") == 0
    check(ok, f"{what}: exit 0, ok, no errors (rc={rc}, stderr={err.strip()[-300:]!r})")
    return ok


def client_cost(j, what):
    c = j["client"]
    check(c["cpu_s"] >= 0 and c["heap_fallbacks"] == 0,
          f"{what}: client CPU reported, no handler heap allocations ({c})")


def run_modes(server, pid, proto, tmp):
    short = ["--seconds", str(0.5 * SCALE), "--warmup", "0.1", "--server", server, "--protocol", proto,
             "--server-pid", str(pid)]
    rc, j, err = bench("churn", "--client-threads", "2", *short)
    if good(rc, j, err, f"{proto} churn"):
        check(j["sessions"] > 0 and j["sessions_per_s"] > 0, f"{proto} churn: sessions > 0 ({j['sessions']})")
        check(ordered(j["handshake_us"]), f"{proto} churn: p50 <= p90 <= p99 <= p99.9 <= max ({j['handshake_us']})")
        check("cpu_us_per_session" in j["server_process"], f"{proto} churn: server CPU per session")
        client_cost(j, f"{proto} churn")

    for extra in (["--pairs", "2"], ["--pairs", "3", "--size", "4096", "--client-threads", "2"]):
        rc, j, err = bench("route", *extra, *short)
        if good(rc, j, err, f"{proto} route {' '.join(extra)}"):
            check(j["msgs"] > 0 and j["msgs_per_s"] > 0 and j["mb_per_s"] > 0,
                  f"{proto} route {' '.join(extra)}: messages > 0 ({j['msgs']})")
            check(j["msgs_sent_total"] >= j["msgs"], f"{proto} route: sent >= measured")
            check(j["client"]["cpu_ns_per_msg"] > 0, f"{proto} route: client CPU per message "
                  f"{j['client']['cpu_ns_per_msg']:.0f} ns")
            client_cost(j, f"{proto} route")
    if proto == "nats":
        rc, j, err = bench("route", "--ack", *short)
        check(rc == 64, f"nats route --ack is a usage error: rc={rc}")
        return

    rc, j, err = bench("route", "--ack", "--window", "16", "--pairs", "2", *short)
    if good(rc, j, err, "lariv route --ack"):
        check(j["msgs"] > 0 and j["ack"] is True, f"lariv route --ack: messages > 0 ({j['msgs']})")

    hist = os.path.join(tmp, "rate.hgrm")
    rc, j, err = bench("rate", "--rate", "4000", "--pairs", "2", "--histogram", hist, *short)
    if good(rc, j, err, "lariv rate"):
        lat = j["latency_us"]
        check(j["msgs"] > 0 and lat["count"] > 0, f"lariv rate: messages and samples > 0 ({j['msgs']})")
        check(ordered(lat), f"lariv rate: p50 <= p90 <= p99 <= p99.9 <= max ({lat})")
        # The pacer does not run far ahead of the rate (a slow or loaded machine may fall behind it,
        # which the latency shows: no lower bound, so the check cannot fail on a slow machine).
        check(0 < j["msgs_per_s"] < 1.5 * 4000, f"lariv rate: not far above the target rate ({j['msgs_per_s']:.0f}/s)")
        with open(hist) as f:
            text = f.read()
        lines = text.splitlines()
        check(lines[0].split() == ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"],
              f"--histogram: HdrHistogram header ({lines[0]!r})")
        rows = [ln.split() for ln in lines[2:] if ln and not ln.startswith("#")]
        values = [float(r[0]) for r in rows]
        pct = [float(r[1]) for r in rows]
        check(len(rows) > 5 and values == sorted(values) and pct == sorted(pct) and pct[-1] == 1.0,
              f"--histogram: {len(rows)} rows, values and percentiles ascending, ends at 1.0")
        check(int(rows[-1][2]) == lat["count"], "--histogram: the last TotalCount is the sample count")
        check("#[Mean    =" in text and "#[Max     =" in text, "--histogram: the #[Mean/#[Max footer")

    rc, j, err = bench("idle", "--sessions", "300", "--client-threads", "2", "--seconds", "0.5",
                       "--server", server, "--server-pid", str(pid))
    if good(rc, j, err, "lariv idle"):
        srv = j["server_process"]
        # The figure itself is the server allocator's business (300 sessions may fit in pages it
        # already holds): check that the tool read /proc/PID and computed it from what it read.
        rss_ok = (srv["rss_before_kib"] > 0 and srv["rss_after_kib"] > 0 and
                  abs(srv["rss_per_session_b"] -
                      (srv["rss_after_kib"] - srv["rss_before_kib"]) * 1024 / 300) < 1024 / 300 + 1)
        check(j["sessions"] == 300 and rss_ok,
              f"lariv idle: 300 sessions, server RSS read from /proc and per session = delta / 300 ({srv})")
        check(srv["cpu_pct"] >= 0 and "rss_per_session_b" in j["client"], "lariv idle: CPU% and client RSS")
        check(ordered(j["handshake_us"]) or j["handshake_us"]["p50"] == j["handshake_us"]["max"],
              "lariv idle: handshake percentiles in order")

    # Usage errors: 64, like the rest of the CLI.
    for args in (["route", "--size", "4"], ["rate", "--size", "8"], ["nosuchmode"], [],
                 ["route", "--histogram", os.path.join(tmp, "x")], ["churn", "--server", "noport"]):
        p = subprocess.run([LARIV, "bench", *args], capture_output=True, text=True, timeout=30)
        check(p.returncode == 64, f"lariv bench {' '.join(args)}: usage error 64 (rc={p.returncode})")
    # Nothing listening: 69.
    dead = free_port()
    rc, j, err = bench("route", "--server", f"127.0.0.1:{dead}", "--seconds", "0.2")
    check(rc == 69 and j is not None and j["ok"] is False and "connect" in j["error"],
          f"nothing listening: exit 69 and ok=false in --json (rc={rc})")


def main():
    if not (os.path.isfile(NATS) and os.access(NATS, os.X_OK)):
        print(f"FAIL {NATS} is missing: install nats-server (scripts/deps.sh test)", flush=True)
        return 1
    tmp = tempfile.mkdtemp(prefix="lariv_bench_test.")
    lport = free_port()
    d = subprocess.Popen([LARIVD, "--port", str(lport), "--monitor-port", "0", "--threads", "2",
                          "--log-level", "warn"])
    nport = free_port()
    n = subprocess.Popen([NATS, "-a", "127.0.0.1", "-p", str(nport)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        check(wait_for(listening(lport), 10 * SCALE), "larivd listens")
        check(wait_for(listening(nport), 10 * SCALE), "nats-server listens")
        run_modes(f"127.0.0.1:{lport}", d.pid, "lariv", tmp)
        run_modes(f"127.0.0.1:{nport}", n.pid, "nats", tmp)
        check(d.poll() is None and n.poll() is None, "both servers still run")
    finally:
        for p in (d, n):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
