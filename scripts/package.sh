#!/usr/bin/env bash
# Builds the Debian packages (debian/: debhelper, compat 13) into build/deb/ and checks them with
# lintian: larivd (the daemon, its systemd unit, /etc/lariv/larivd.json), lariv-tools (the `lariv`
# client), liblariv-dev (headers, static libraries, the CMake package) and the -dbgsym packages
# dh_strip makes. The test suites are not run here (CI runs them: scripts/test.sh).
#
# Usage: scripts/package.sh      (LARIV_JOBS=N to limit the build's parallelism)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scripts/deps.sh package

out=$root/build/deb
src=$out/src
rm -rf "$out"
mkdir -p "$src"
# dpkg-buildpackage writes the packages into the parent of the source tree: build a copy in
# build/deb/src, so they land in build/deb/ (and the checkout stays as it was).
tar -C "$root" --exclude=./build --exclude=./.git --exclude=./out --exclude=./.cache \
  --exclude=__pycache__ -c . | tar -C "$src" -x
# The source revision for /varz (the copy is no git checkout).
LARIV_REVISION=$(git -C "$root" describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)
export LARIV_REVISION
export DEB_BUILD_OPTIONS="nocheck parallel=${LARIV_JOBS:-$(nproc)}"
echo "package: dpkg-buildpackage -us -uc -b (log: build/deb/build.log)"
if ! (cd "$src" && dpkg-buildpackage -us -uc -b) >"$out/build.log" 2>&1; then
  tail -40 "$out/build.log" >&2
  echo "package: dpkg-buildpackage failed" >&2
  exit 1
fi
if grep -nE ':[0-9]+:[0-9]+: warning:|CMake Warning' "$out/build.log" >&2; then
  echo "package: the build has compiler or CMake warnings (above)" >&2
  exit 1
fi
rm -rf "$src"

changes=$(ls "$out"/*.changes)
echo "package: lintian -i --fail-on error,warning $(basename "$changes")"
lintian -i --fail-on error,warning "$changes"

echo "package: build/deb/"
for f in "$out"/*.deb "$out"/*.ddeb; do
  [ -e "$f" ] || continue
  printf '  %-48s %7s KiB  %s\n' "$(basename "$f")" "$(( $(stat -c %s "$f") / 1024 ))" \
    "$(dpkg-deb -f "$f" Description | head -1)"
done
