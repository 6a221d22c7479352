#!/usr/bin/env bash
# Two larivd nodes (a real etcd) vs two nats-server 2.9 nodes joined by routes: every message
# crosses nodes (tests/bench/cluster_bench.py says what each row measures).
# Usage: scripts/bench-cluster.sh [--reps N] [--quick] [--out DIR] [--no-build]
# Needs etcd-server and nats-server (scripts/deps.sh bench). Prints medians and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${BENCH_SERVER_PRESET:-release}
args=()
do_build=1
for a in "$@"; do
  case "$a" in
    --no-build) do_build=0 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) args+=("$a") ;;
  esac
done
if [ "$do_build" = 1 ]; then
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "${LARIV_JOBS:-$(nproc)}" --target lariv_cli larivd
fi
exec python3 tests/bench/cluster_bench.py "build/$preset/tools/lariv/lariv" \
  "${BENCH_SERVER_LARIVD:-build/$preset/server/larivd}" "${args[@]}"
