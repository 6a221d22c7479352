#!/usr/bin/env bash
# Builds the Debian package build/deb/lariv-registry_<version>_<arch>.deb.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
cmake -S . -B build/deb -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g -DNDEBUG" -DCMAKE_INSTALL_PREFIX=/usr \
  -DLARIV_BUILD_TESTS=OFF -DLARIV_PACKAGE_DEB=ON >/dev/null
cmake --build build/deb -j "${LARIV_JOBS:-$(nproc)}"
(cd build/deb && cpack -G DEB >/dev/null)
ls build/deb/*.deb
