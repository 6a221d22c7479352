#!/usr/bin/env bash
# The README's run command: install what is missing, build the release preset and start the
# program with sensible defaults. Until larivd exists this runs the Lariv demo.
# Usage: scripts/run.sh [args for the program]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
cmake --preset release >/dev/null
cmake --build --preset release -j "${LARIV_JOBS:-$(nproc)}"
if [ -x build/release/server/larivd ]; then
  exec build/release/server/larivd "$@"
fi
exec build/release/examples/lariv_demo "$@"
