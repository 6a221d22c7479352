#!/usr/bin/env bash
# The README's test command: install what is missing, configure, build and run the test suite.
# Usage: scripts/test.sh [preset] [extra ctest args]   (preset: release (default), debug, asan, tsan)
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-release}
shift || true
scripts/deps.sh test
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" -j "${LARIV_JOBS:-$(nproc)}"
ctest --preset "$preset" -j "${LARIV_TEST_JOBS:-2}" "$@"
