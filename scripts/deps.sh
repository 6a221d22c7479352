#!/usr/bin/env bash
# Installs the Debian 12 packages the project needs, only those that are missing (idempotent).
# Usage: scripts/deps.sh [build|test|bench|package|all]   (default: test)
set -euo pipefail
profile=${1:-test}

build_pkgs=(cmake ninja-build g++ make pkg-config libasio-dev libspdlog-dev nlohmann-json3-dev libcli11-dev libssl-dev
            libsystemd-dev)
test_pkgs=(doctest-dev clang-14 libclang-rt-14-dev llvm-14 relacy-dev python3 valgrind strace openssl prometheus nats-server etcd-server etcd-client)
bench_pkgs=(libbenchmark-dev libtbb-dev libcuckoo-dev libxenium-dev gnuplot-nox)
# The Debian packages (scripts/package.sh): debhelper, dpkg-buildpackage, the man pages, lintian.
package_pkgs=(debhelper dpkg-dev help2man lintian)

case "$profile" in
  build) want=("${build_pkgs[@]}") ;;
  test)  want=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
  bench) want=("${build_pkgs[@]}" "${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
  package) want=("${build_pkgs[@]}" "${package_pkgs[@]}") ;;
  all)   want=("${build_pkgs[@]}" "${test_pkgs[@]}" "${bench_pkgs[@]}" "${package_pkgs[@]}") ;;
  *) echo "usage: $0 [build|test|bench|package|all]" >&2; exit 64 ;;
esac

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
