#!/usr/bin/env bash
# Runs the peer benchmarks of issue 3: Lariv against a sharded std::unordered_map + shared_mutex,
# tbb::concurrent_hash_map, libcuckoo, xenium's vyukov_hash_map and one mutex + unordered_map.
# Usage: scripts/bench.sh [lariv_bench args]   (default: the full run, threads 1,2, 15 samples)
#   e.g. scripts/bench.sh --threads 1,2,4,8,16      scripts/bench.sh --quick --only lariv,xenium
# Table on stdout; JSON lines in build/bench/results.jsonl (or --json FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh bench
cmake --preset bench
cmake --build --preset bench -j2 --target lariv_bench
exec build/bench/tests/bench/lariv_bench "$@"
