#!/usr/bin/env bash
# Routing figures of the real larivd binary (tests/bench/route_bench.cpp): SEND -> MSG over
# loopback TCP through a freshly started daemon, every message checked (order, size, contents).
# Builds the bench preset (route_bench and larivd), then runs the default matrix:
#   payload 16 B and 256 B, 1 and 4 sender/receiver pairs, open-loop and acknowledged (--ack,
#   window 64) SENDs, larivd --threads 1 and 2; 5 samples of 3 s each, median [min..max].
# Usage: scripts/route-bench.sh [route_bench args]     later args override the matrix's, e.g.
#   scripts/route-bench.sh --compare /work/baseline/larivd     (B/A ratios, samples alternate)
#   scripts/route-bench.sh --samples 3 --seconds 2 --pairs 1 --json build/bench/route.jsonl
#   scripts/route-bench.sh --transport tcp,tls     (the cost of TLS: the same matrix over both)
# Environment: LARIV_JOBS (build parallelism, default nproc), ROUTE_BENCH_NO_BUILD=1 (use what is
# built), ROUTE_BENCH_LARIVD (the binary measured as A; default the bench preset's larivd).
# Exit status: non-zero on a lost, corrupt or reordered message, an error reply or a crash.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/bench
if [ "${ROUTE_BENCH_NO_BUILD:-0}" != 1 ]; then
  scripts/deps.sh bench
  cmake --preset bench >/dev/null
  cmake --build --preset bench -j "${LARIV_JOBS:-$(nproc)}" --target route_bench larivd
fi
larivd=${ROUTE_BENCH_LARIVD:-$build/server/larivd}
exec "$build/tests/bench/route_bench" --larivd "$larivd" \
  --size 16,256 --pairs 1,4 --mode open,ack --threads 1,2 "$@"
