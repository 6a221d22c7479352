#!/usr/bin/env bash
# The README's run command: install what is missing, build larivd (release preset) and start it
# with sensible defaults (127.0.0.1:7411, monitor 127.0.0.1:7412). Arguments go to larivd.
# Usage: scripts/run.sh [args for the program]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
cmake --preset release >/dev/null
cmake --build --preset release -j "${LARIV_JOBS:-$(nproc)}" --target larivd
exec build/release/server/larivd "$@"
