#!/usr/bin/env bash
# larivd side by side with nats-server 2.9, measured by one client: `lariv bench` speaks both
# protocols with the same engine (tools/lariv/bench.cpp).
#
# Builds lariv and larivd (preset release, or BENCH_SERVER_PRESET; LARIV_JOBS jobs), then for
# every row and repetition starts a fresh larivd (free loopback port, --monitor-port 0,
# --threads 2, log level warn) and a fresh `nats-server -a 127.0.0.1 -p PORT`, runs the same
# `lariv bench` against each in turn (rep 1 larivd, rep 1 nats, rep 2 larivd, ...), takes the
# medians and prints a side-by-side table. Rows: churn with 1 and 4 client threads; routed 16 B
# with 1, 8 and 64 pairs; 256 B and 4 KiB with 8 pairs; fixed-rate 10k msgs/s one-way latency
# (4 pairs); idle memory and CPU per session (10,000 sessions).
#
# Usage: scripts/bench-server.sh [--reps N] [--quick] [--out DIR] [--update-docs] [--no-build]
#   --reps N        repetitions per row and server (default 3); the median is reported
#   --quick         CI smoke: 1 rep, 0.5 s per run, 500 idle sessions
#   --out DIR       results (default build/bench-server): results.json, runs.jsonl, table.txt,
#                   table.md, ratios.svg, latency.svg, the --histogram files
#   --update-docs   copy the SVGs to docs/bench/ (the README shows them)
#   --no-build      use what is built
# Needs nats-server and gnuplot (scripts/deps.sh bench installs both) and python3.
# Exit status: non-zero when a run fails (a lost, corrupt or reordered message, an error reply).
set -euo pipefail
cd "$(dirname "$0")/.."

reps=3
quick=0
out=build/bench-server
update_docs=0
do_build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) reps=$2; shift 2 ;;
    --reps=*) reps=${1#*=}; shift ;;
    --quick) quick=1; reps=1; shift ;;
    --out) out=$2; shift 2 ;;
    --out=*) out=${1#*=}; shift ;;
    --update-docs) update_docs=1; shift ;;
    --no-build) do_build=0; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "bench-server: unknown argument $1 (--help)" >&2; exit 64 ;;
  esac
done

die() { echo "bench-server: $*" >&2; exit 1; }
nats=$(command -v nats-server || true)
for c in /usr/sbin/nats-server /usr/bin/nats-server; do
  [ -n "$nats" ] || { [ -x "$c" ] && nats=$c; }
done
[ -n "$nats" ] || die "nats-server is missing: run scripts/deps.sh bench (Debian package nats-server)"
command -v gnuplot >/dev/null || die "gnuplot is missing: run scripts/deps.sh bench (Debian package gnuplot-nox)"
command -v python3 >/dev/null || die "python3 is missing: run scripts/deps.sh bench"

preset=${BENCH_SERVER_PRESET:-release}
if [ "$do_build" = 1 ]; then
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "${LARIV_JOBS:-$(nproc)}" --target lariv_cli larivd
fi
lariv=build/$preset/tools/lariv/lariv
larivd=${BENCH_SERVER_LARIVD:-build/$preset/server/larivd}  # another binary: before/after tables
if [ ! -x "$lariv" ] || [ ! -x "$larivd" ]; then die "$lariv or $larivd is not built (drop --no-build)"; fi

if [ "$quick" = 1 ]; then
  secs=0.5; warm=0.1; idle_secs=0.5; sessions=500
else
  secs=3; warm=0.5; idle_secs=5; sessions=10000
fi
# Each side holds one descriptor per idle session, plus a few.
want=$((sessions + 256))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
  ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
nofile=$(ulimit -n)
idle_note=""
if [ "$nofile" != unlimited ] && [ "$nofile" -lt "$want" ]; then
  sessions=$((nofile - 256))
  idle_note="ulimit -n is $nofile (hard limit $(ulimit -Hn)): idle rows hold $sessions sessions"
  echo "bench-server: note: $idle_note" >&2
  [ "$sessions" -gt 0 ] || die "ulimit -n $nofile is too small for the idle row"
fi

mkdir -p "$out/hist"
runs=$out/runs.jsonl
: >"$runs"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_listen() {  # port pid
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

server_pid=""
cleanup() { [ -z "$server_pid" ] || { kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }; }
trap cleanup EXIT

start_server() {  # larivd|nats -> sets server_pid, server_port
  server_port=$(free_port)
  if [ "$1" = larivd ]; then
    "$larivd" --port "$server_port" --monitor-port 0 --threads 2 --log-level warn \
      --max-sessions $((sessions + 100)) >"$out/larivd.log" 2>&1 &
  else
    "$nats" -a 127.0.0.1 -p "$server_port" >"$out/nats.log" 2>&1 &
  fi
  server_pid=$!
  wait_listen "$server_port" "$server_pid" || die "$1 did not start (log: $out/$1.log)"
}
stop_server() {
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

# name | mode and flags
rows=(
  "churn-1t|churn --client-threads 1"
  "churn-4t|churn --client-threads 4"
  "route-16B-1p|route --pairs 1 --size 16"
  "route-16B-8p|route --pairs 8 --size 16"
  "route-16B-64p|route --pairs 64 --size 16"
  "route-256B-8p|route --pairs 8 --size 256"
  "route-4KiB-8p|route --pairs 8 --size 4096"
  "route-16B-8p-ack|route --pairs 8 --size 16 --ack --window 256"
  "rate-10k|rate --rate 10000 --pairs 4 --size 16"
  "idle|idle --sessions $sessions --client-threads 2"
)

started=$(date +%s)
echo "# bench-server: larivd ($("$larivd" --version)) vs nats-server ($("$nats" --version 2>&1 | head -1))"
echo "# $(date -u +%FT%TZ)  nproc $(nproc)  cpu \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')\""
echo "# $reps rep(s) per row and server, interleaved; ${secs} s measured after ${warm} s warm-up (idle: ${idle_secs} s hold)"
for row in "${rows[@]}"; do
  name=${row%|*}
  for rep in $(seq 1 "$reps"); do
    for srv in larivd nats; do
      args=${row#*|}
      proto=lariv
      [ "$srv" = nats ] && proto=nats
      # The acked row: every larivd SEND carries a token and waits for its ACK (at most 256
      # unacknowledged per sender); NATS has no per-message ack, so it runs without (the goal
      # is acked larivd against NATS with nothing to confirm).
      [ "$srv" = nats ] && args=${args%% --ack*}
      extra=(--seconds "$secs" --warmup "$warm")
      case "$name" in
        idle) extra=(--seconds "$idle_secs") ;;
        rate-*) extra+=(--histogram "$out/hist/$name-$srv-$rep.hgrm") ;;
      esac
      start_server "$srv"
      # shellcheck disable=SC2086
      if ! result=$("$lariv" bench $args "${extra[@]}" --protocol "$proto" --server "127.0.0.1:$server_port" \
                      --server-pid "$server_pid" --json --quiet); then
        echo "$result" >&2
        die "$name rep $rep against $srv failed (server log: $out/$srv.log)"
      fi
      stop_server
      printf '{"row":"%s","server":"%s","rep":%s,"result":%s}\n' "$name" "$srv" "$rep" "$result" >>"$runs"
      printf '  %-14s rep %s %-6s done (%s s)\n' "$name" "$rep" "$srv" "$(( $(date +%s) - started ))" >&2
    done
  done
done

python3 - "$out" "$reps" "$idle_note" <<'PY'
import json, os, shutil, statistics, sys
out, reps, idle_note = sys.argv[1], int(sys.argv[2]), sys.argv[3]
runs = [json.loads(l) for l in open(os.path.join(out, "runs.jsonl"))]

def get(res, path):
    for k in path.split("."):
        res = res[k]
    return res

by = {}
for r in runs:
    by.setdefault((r["row"], r["server"]), []).append(r["result"])

# (row, label, json path, unit, higher_is_better)
metrics = [
    ("churn-1t", "churn 1 thread", "sessions_per_s", "sessions/s", True),
    ("churn-1t", "churn 1 thread handshake p99", "handshake_us.p99", "us", False),
    ("churn-4t", "churn 4 threads", "sessions_per_s", "sessions/s", True),
    ("churn-4t", "churn 4 threads handshake p99", "handshake_us.p99", "us", False),
    ("route-16B-1p", "route 16 B, 1 pair", "msgs_per_s", "msgs/s", True),
    ("route-16B-8p", "route 16 B, 8 pairs", "msgs_per_s", "msgs/s", True),
    ("route-16B-64p", "route 16 B, 64 pairs", "msgs_per_s", "msgs/s", True),
    ("route-256B-8p", "route 256 B, 8 pairs", "msgs_per_s", "msgs/s", True),
    ("route-256B-8p", "route 256 B, 8 pairs MB/s", "mb_per_s", "MB/s", True),
    ("route-4KiB-8p", "route 4 KiB, 8 pairs", "msgs_per_s", "msgs/s", True),
    ("route-4KiB-8p", "route 4 KiB, 8 pairs MB/s", "mb_per_s", "MB/s", True),
    ("route-16B-8p-ack", "route 16 B, 8 pairs, acked (nats: not)", "msgs_per_s", "msgs/s", True),
    ("rate-10k", "10k msgs/s latency p50", "latency_us.p50", "us", False),
    ("rate-10k", "10k msgs/s latency p99", "latency_us.p99", "us", False),
    ("rate-10k", "10k msgs/s latency p99.9", "latency_us.p99_9", "us", False),
    ("idle", "idle RSS per session", "server_process.rss_per_session_b", "bytes", False),
    ("idle", "idle server CPU", "server_process.cpu_pct", "% of a core", False),
]

def med(row, srv, path):
    vals = [get(r, path) for r in by.get((row, srv), [])]
    return statistics.median(vals) if vals else None

def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"

table = []
for row, label, path, unit, hib in metrics:
    a, b = med(row, "larivd", path), med(row, "nats", path)
    ratio = None
    if a is not None and b is not None:
        num, den = (a, b) if hib else (b, a)
        ratio = num / den if den > 0 else None
    table.append({"row": row, "metric": label, "unit": unit, "larivd": a, "nats": b, "ratio": ratio,
                  "ratio_is": "larivd/nats" if hib else "nats/larivd", "higher_is_better": hib})

# What the client costs per message (or session) next to what the server spends on it.
cost = []
for row, path_c, path_s, unit in [
    ("churn-1t", "client.cpu_us_per_session", "server_process.cpu_us_per_session", "us/session"),
    ("route-16B-8p", "client.cpu_ns_per_msg", "server_process.cpu_ns_per_msg", "ns/msg"),
    ("route-256B-8p", "client.cpu_ns_per_msg", "server_process.cpu_ns_per_msg", "ns/msg"),
    ("route-4KiB-8p", "client.cpu_ns_per_msg", "server_process.cpu_ns_per_msg", "ns/msg"),
]:
    cost.append({"row": row, "unit": unit,
                 "client_vs_larivd": med(row, "larivd", path_c), "larivd": med(row, "larivd", path_s),
                 "client_vs_nats": med(row, "nats", path_c), "nats": med(row, "nats", path_s)})

lines = [f"{'':32} {'larivd':>12} {'nats-server':>12}  {'ratio':>6}  ratio is"]
for t in table:
    r = "-" if t["ratio"] is None else f"{t['ratio']:.2f}"
    lines.append(f"{t['metric']:32} {fmt(t['larivd']):>12} {fmt(t['nats']):>12}  {r:>6}  {t['ratio_is']} ({t['unit']})")
lines.append("ratio > 1: larivd better (throughput larivd/nats, latency, memory and CPU nats/larivd)")
lines.append("")
lines.append(f"{'CPU per unit of work':32} {'client':>10} {'larivd':>10} {'client':>10} {'nats':>10}")
for c in cost:
    lines.append(f"{c['row'] + ' (' + c['unit'] + ')':32} {fmt(c['client_vs_larivd']):>10} {fmt(c['larivd']):>10} "
                 f"{fmt(c['client_vs_nats']):>10} {fmt(c['nats']):>10}")
if idle_note:
    lines.append("note: " + idle_note)
text = "\n".join(lines)
print(text)
open(os.path.join(out, "table.txt"), "w").write(text + "\n")

md = ["| | larivd | nats-server | ratio | |", "|---|---:|---:|---:|---|"]
for t in table:
    r = "-" if t["ratio"] is None else f"**{t['ratio']:.2f}**"
    md.append(f"| {t['metric']} ({t['unit']}) | {fmt(t['larivd'])} | {fmt(t['nats'])} | {r} | {t['ratio_is']} |")
md += ["", "| CPU per unit of work | client (vs larivd) | larivd | client (vs nats) | nats-server |",
       "|---|---:|---:|---:|---:|"]
for c in cost:
    md.append(f"| {c['row']} ({c['unit']}) | {fmt(c['client_vs_larivd'])} | {fmt(c['larivd'])} | "
              f"{fmt(c['client_vs_nats'])} | {fmt(c['nats'])} |")
open(os.path.join(out, "table.md"), "w").write("\n".join(md) + "\n")
json.dump({"reps": reps, "table": table, "cpu_cost": cost, "runs": runs},
          open(os.path.join(out, "results.json"), "w"), indent=1)

# Plot data: ratios, and the fixed-rate percentile curves of the rep with the median p99.
with open(os.path.join(out, "ratios.dat"), "w") as f:
    for t in table:
        if t["ratio"] is not None:
            f.write('"%s" %.6g\n' % (t["metric"], t["ratio"]))
for srv in ("larivd", "nats"):
    rs = sorted(((r["result"]["latency_us"]["p99"], r["rep"]) for r in runs
                 if r["row"] == "rate-10k" and r["server"] == srv))
    if not rs:
        continue
    rep = rs[(len(rs) - 1) // 2][1]
    src = os.path.join(out, "hist", f"rate-10k-{srv}-{rep}.hgrm")
    shutil.copy(src, os.path.join(out, f"rate-10k-{srv}.hgrm"))
    with open(src) as f, open(os.path.join(out, f"rate-10k-{srv}.dat"), "w") as d:
        for ln in f:
            p = ln.split()
            if len(p) == 4 and not ln.startswith("#") and p[0] != "Value":
                d.write(f"{p[3]} {p[0]}\n")
PY

gnuplot <<EOF
set terminal svg size 900,520 font "sans,11" background rgb "white"
set output "$out/ratios.svg"
set title "larivd vs nats-server 2.9, same client (lariv bench): ratio > 1 = larivd better"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.8 relative
set logscale y 2
set ylabel "ratio (> 1: larivd better)"
set bmargin 11
set rmargin 8
set xtics rotate by -40 font ",9" nomirror
set grid ytics
set key off
set yrange [0.125:*]
set arrow from graph 0, first 1 to graph 1, first 1 nohead dashtype 2 linecolor rgb "black"
plot "$out/ratios.dat" using 2:xtic(1) linecolor rgb "#3b75af"
EOF
gnuplot <<EOF
set terminal svg size 900,520 font "sans,11" background rgb "white"
set output "$out/latency.svg"
set title "one-way latency at 10,000 msgs/s (4 pairs, 16 B), percentile distribution"
set logscale x
set logscale y
set xlabel "percentile"
set ylabel "latency (us)"
set xrange [1:*]
set yrange [10:*]
set xtics ("0%%" 1, "90%%" 10, "99%%" 100, "99.9%%" 1000, "99.99%%" 10000, "99.999%%" 100000)
set grid
set key top left
plot "$out/rate-10k-larivd.dat" using 1:2 with lines linewidth 2 title "larivd", \
     "$out/rate-10k-nats.dat" using 1:2 with lines linewidth 2 title "nats-server"
EOF
echo "# results: $out/results.json, $out/table.md, $out/ratios.svg, $out/latency.svg ($(( $(date +%s) - started )) s)"
if [ "$update_docs" = 1 ]; then
  mkdir -p docs/bench
  cp "$out/ratios.svg" "$out/latency.svg" docs/bench/
  echo "# copied the SVGs to docs/bench/"
fi
