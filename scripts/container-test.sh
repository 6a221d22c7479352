#!/usr/bin/env bash
# The real container test (issue 6, shared/CONTAINERS.md): podman builds the unchanged
# docker/Dockerfile from a debootstrapped debian:bookworm base, runs the image on loopback, and
# checks /healthz, HEALTHCHECK, a handshake and a routed message, a non-root process, no compiler
# in the runtime image, and that `stop -t 10` drains and exits 0 inside the timeout. Then the .deb
# from scripts/package.sh is installed into a plain debian:bookworm container with apt. Everything
# it made is removed at the end.
#
# Usage: scripts/container-test.sh     (as root; takes a few minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

pkgs=(podman runc debootstrap python3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

W=$(mktemp -d /tmp/lariv-podman.XXXXXX)
P=(podman --root "$W/storage" --runroot "$W/run" --tmpdir "$W/tmp" --storage-driver=overlay
   --cgroup-manager=cgroupfs --events-backend=file --runtime=runc)
name=larivd-ct-$$
port=17411
mport=17412
cleanup() {
  "${P[@]}" rm -f "$name" >/dev/null 2>&1 || true
  "${P[@]}" rmi -a -f >/dev/null 2>&1 || true
  "${P[@]}" image prune -a -f >/dev/null 2>&1 || true
  umount -R "$W/storage/overlay" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "container-test: FAIL: $*" >&2; "${P[@]}" logs "$name" 2>&1 | tail -20 >&2 || true; exit 1; }
t0=$(date +%s)
say() { echo "container-test: [$(( $(date +%s) - t0 )) s] $*"; }

say "base image: debootstrap bookworm (minbase) from the machine's Debian mirror"
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
debootstrap --variant=minbase bookworm "$W/rootfs" "$mirror" >/dev/null
tar -C "$W/rootfs" -c . | "${P[@]}" import - docker.io/library/debian:bookworm >/dev/null
"${P[@]}" tag docker.io/library/debian:bookworm docker.io/library/debian:bookworm-slim
rm -rf "$W/rootfs"

say "build docker/Dockerfile (unchanged)"
"${P[@]}" build --pull=never --network=host --format=docker -f docker/Dockerfile \
  -t lariv/larivd:test . >"$W/build.log" 2>&1 || { tail -30 "$W/build.log"; fail "image build"; }
size=$("${P[@]}" image inspect lariv/larivd:test --format '{{.Size}}')
say "image size: $((size / 1024 / 1024)) MiB"

say "run on loopback (ports $port/$mport)"
"${P[@]}" run -d --name "$name" --network=host \
  --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 \
  -e LARIV_PORT=$port -e LARIV_MONITOR_PORT=$mport -e LARIV_NODE_ID=9 \
  lariv/larivd:test >/dev/null

ok=0
for _ in $(seq 1 50); do
  if "${P[@]}" healthcheck run "$name" >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.2
done
[ $ok = 1 ] || fail "HEALTHCHECK never passed"
say "HEALTHCHECK passes"

uid=$("${P[@]}" exec "$name" id -u)
[ "$uid" != 0 ] || fail "the daemon runs as root"
say "runs as uid $uid"
if "${P[@]}" exec "$name" sh -c 'command -v g++ || command -v c++ || command -v cc || command -v cmake' >/dev/null 2>&1; then
  fail "the runtime image carries a compiler"
fi
say "no compiler in the runtime image"

python3 - "$port" "$mport" <<'PY' || fail "protocol check"
import json, socket, sys, time, urllib.request
port, mport = int(sys.argv[1]), int(sys.argv[2])
assert urllib.request.urlopen(f"http://127.0.0.1:{mport}/healthz", timeout=2).read() == b"ok\n"
def hello(name):
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    s.sendall(b'HELLO {"name":"%s"}\r\n' % name.encode())
    f = s.makefile("rb")
    line = f.readline().split()
    assert line[0] == b"+HELLO", line
    body = json.loads(f.read(int(line[1])))
    f.readline()
    return s, f, body
a, fa, ha = hello("alice")
b, fb, hb = hello("bob")
assert ha["node"] == 9 and ha["session"][:8] == "00000009", ha
a.sendall(b"SEND %s 5 t1\r\nhello\r\n" % hb["session"].encode())
assert fa.readline() == b"ACK t1 ok\r\n"
line = fb.readline().split()
assert line[0] == b"MSG" and line[1].decode() == ha["session"] and fb.read(5) == b"hello", line
print("container-test: handshake and routed message ok")
PY

say "stop -t 10 (SIGTERM drains)"
s0=$(date +%s%N)
"${P[@]}" stop -t 10 "$name" >/dev/null
ms=$(( ($(date +%s%N) - s0) / 1000000 ))
code=$("${P[@]}" inspect "$name" --format '{{.State.ExitCode}}')
[ "$code" = 0 ] || fail "exit code $code after stop (137 = killed at the timeout)"
[ "$ms" -lt 10000 ] || fail "stop took $ms ms"
say "stopped in $ms ms, exit code 0"
"${P[@]}" rm "$name" >/dev/null

say "README run command on a fresh debian:bookworm: scripts/run.sh --check-config"
tar --exclude=./build --exclude=./.git -C "$root" -c . |
  "${P[@]}" run -i --rm --network=host --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 \
    docker.io/library/debian:bookworm \
    sh -c 'mkdir /w && tar -x -C /w && cd /w && scripts/run.sh --check-config' >"$W/run.log" 2>&1 \
  || { tail -20 "$W/run.log"; fail "scripts/run.sh on a fresh bookworm"; }
grep -q "configuration ok" "$W/run.log" || fail "scripts/run.sh did not start larivd"
say "scripts/run.sh installs, builds and starts larivd on a fresh bookworm"

say "Debian package: build and install into a plain debian:bookworm container"
scripts/package.sh >"$W/package.log" 2>&1 || { tail -20 "$W/package.log"; fail "package build"; }
deb=$(ls build/deb/*.deb | head -1)
"${P[@]}" run --rm --network=host --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 \
  -v "$root/build/deb:/pkg:ro" docker.io/library/debian:bookworm \
  sh -c "apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /pkg/$(basename "$deb") >/dev/null \
         && larivd --version && test -f /lib/systemd/system/larivd.service \
         && larivd --check-config --config /etc/lariv/larivd.json \
         && test -f /usr/share/cmake/lariv/larivConfig.cmake" \
  || fail ".deb install"
say "PASS (.deb $(( $(stat -c %s "$deb") / 1024 )) KiB installs with apt; larivd --version ok)"
