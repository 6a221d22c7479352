#!/usr/bin/env bash
# The real container test (issues 6 and 14, shared/CONTAINERS.md):
#  1. podman builds the unchanged docker/Dockerfile from a debootstrapped debian:bookworm base
#     and prints the image's size; the runtime layer has no apt lists or caches and a stripped
#     larivd. The image runs on loopback: /healthz, HEALTHCHECK, a handshake and a routed
#     message, a non-root process, no compiler, and `stop -t 10` drains and exits 0 in time.
#  2. A mounted /etc/lariv/larivd.json replaces the image's defaults: its address and ports are
#     the ones that answer.
#  3. scripts/run.sh (the README's run command) on a fresh debian:bookworm.
#  4. The Debian packages from scripts/package.sh (which runs lintian, failing on errors and
#     warnings): larivd and lariv-tools install with apt into a plain bookworm; liblariv-dev plus
#     `cmake g++` alone build and run a find_package(lariv) consumer (tests/deb-consumer); and
#     systemd boots in a container (--systemd=always) where the unit is verified, started
#     (Type=notify: /healthz answers as soon as `systemctl start` returns), watched, reloaded
#     and stopped.
# Everything it made is removed at the end.
#
# Usage: scripts/container-test.sh     (as root; several minutes: larivd compiles three times)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

pkgs=(podman runc debootstrap python3 binutils)
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
LIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)
name=larivd-ct-$$
sd=$name-systemd
port=17411
mport=17412
cleanup() {
  "${P[@]}" rm -f "$name" "$sd" >/dev/null 2>&1 || true
  "${P[@]}" rmi -a -f >/dev/null 2>&1 || true
  "${P[@]}" image prune -a -f >/dev/null 2>&1 || true
  umount -R "$W/storage/overlay" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "container-test: FAIL: $*" >&2; "${P[@]}" logs "$name" 2>&1 | tail -20 >&2 || true; exit 1; }
t0=$(date +%s)
say() { echo "container-test: [$(( $(date +%s) - t0 )) s] $*"; }
indent() { sed 's/^/container-test:   /' "$@"; }
wait_healthy() {
  for _ in $(seq 1 50); do
    if "${P[@]}" healthcheck run "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  return 1
}

say "base image: debootstrap bookworm (minbase) from the machine's Debian mirror"
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
debootstrap --variant=minbase bookworm "$W/rootfs" "$mirror" >/dev/null
# As Docker Hub's debian images: no downloaded .debs or package lists in the base (every RUN
# here starts with apt-get update), so the image size below is close to a real build's.
rm -rf "$W/rootfs"/var/cache/apt/archives/*.deb "$W/rootfs"/var/cache/apt/*.bin "$W/rootfs"/var/lib/apt/lists/*
tar -C "$W/rootfs" -c . | "${P[@]}" import - docker.io/library/debian:bookworm >/dev/null
"${P[@]}" tag docker.io/library/debian:bookworm docker.io/library/debian:bookworm-slim
rm -rf "$W/rootfs"

say "build docker/Dockerfile (unchanged)"
"${P[@]}" build --pull=never --network=host --format=docker -f docker/Dockerfile \
  -t lariv/larivd:test . >"$W/build.log" 2>&1 || { tail -30 "$W/build.log"; fail "image build"; }
size=$("${P[@]}" image inspect lariv/larivd:test --format '{{.Size}}')
base=$("${P[@]}" image inspect docker.io/library/debian:bookworm-slim --format '{{.Size}}')
say "image size: $((size / 1024 / 1024)) MiB ($size bytes): the base $((base / 1024 / 1024)) MiB + larivd's layers $(( (size - base) / 1024 / 1024 )) MiB"
leftovers=$("${P[@]}" run --rm "${LIMITS[@]}" --entrypoint /bin/sh lariv/larivd:test -c \
  'ls -A /var/lib/apt/lists; ls /var/cache/apt/*.bin /var/cache/apt/archives/*.deb 2>/dev/null || true') \
  || fail "listing apt state in the image"
[ -z "$leftovers" ] || fail "apt lists or caches left in the runtime image: $leftovers"
"${P[@]}" run --rm "${LIMITS[@]}" --entrypoint /bin/cat lariv/larivd:test /usr/bin/larivd >"$W/larivd.image"
if readelf -S "$W/larivd.image" | grep -qE '\.(symtab|debug_info)'; then
  fail "/usr/bin/larivd in the image is not stripped"
fi
say "no apt lists or caches in the runtime layer; larivd is stripped ($(( $(stat -c %s "$W/larivd.image") / 1024 )) KiB)"

say "run on loopback (ports $port/$mport)"
"${P[@]}" run -d --name "$name" --network=host "${LIMITS[@]}" \
  -e LARIV_PORT=$port -e LARIV_MONITOR_PORT=$mport -e LARIV_NODE_ID=9 \
  lariv/larivd:test >/dev/null
wait_healthy "$name" || fail "HEALTHCHECK never passed"
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
# The image's defaults come from its /etc/lariv/larivd.json: every listener on 0.0.0.0.
c = json.load(urllib.request.urlopen(f"http://127.0.0.1:{mport}/varz", timeout=2))["config"]
assert c["listen_address"] == c["monitor_address"] == c["tls_listen_address"] == "0.0.0.0", c
print("container-test: handshake and routed message ok; addresses 0.0.0.0 from the image's file")
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

say "a mounted /etc/lariv/larivd.json replaces the image's defaults"
cport=17421
cmport=17422
printf '{"listen_address": "127.0.0.1", "port": %d, "monitor_address": "127.0.0.1",\n "monitor_port": %d, "node_id": 5}\n' \
  "$cport" "$cmport" >"$W/mounted.json"
chmod 0644 "$W/mounted.json"
"${P[@]}" run -d --name "$name" --network=host "${LIMITS[@]}" \
  -v "$W/mounted.json:/etc/lariv/larivd.json:ro" lariv/larivd:test >/dev/null
wait_healthy "$name" || fail "HEALTHCHECK never passed with a mounted config"
python3 - "$cport" "$cmport" <<'PY' || fail "the mounted config file was not honoured"
import json, socket, sys, urllib.request
port, mport = int(sys.argv[1]), int(sys.argv[2])
c = json.load(urllib.request.urlopen(f"http://127.0.0.1:{mport}/varz", timeout=2))["config"]
got = (c["listen_address"], c["port"], c["monitor_address"], c["monitor_port"], c["node_id"])
assert got == ("127.0.0.1", port, "127.0.0.1", mport, 5), c
socket.create_connection(("127.0.0.1", port), timeout=2).close()
print(f"container-test: the mounted file's 127.0.0.1:{port} and monitor 127.0.0.1:{mport} answer (node 5)")
PY
"${P[@]}" stop -t 10 "$name" >/dev/null
"${P[@]}" rm "$name" >/dev/null

say "README run command on a fresh debian:bookworm: scripts/run.sh --check-config"
tar --exclude=./build --exclude=./.git -C "$root" -c . |
  "${P[@]}" run -i --rm --network=host "${LIMITS[@]}" docker.io/library/debian:bookworm \
    sh -c 'mkdir /w && tar -x -C /w && cd /w && scripts/run.sh --check-config' >"$W/run.log" 2>&1 \
  || { tail -20 "$W/run.log"; fail "scripts/run.sh on a fresh bookworm"; }
grep -q "configuration ok" "$W/run.log" || fail "scripts/run.sh did not start larivd"
say "scripts/run.sh installs, builds and starts larivd on a fresh bookworm"

say "Debian packages: scripts/package.sh (dpkg-buildpackage, then lintian --fail-on error,warning)"
scripts/package.sh >"$W/package.log" 2>&1 || { tail -40 "$W/package.log"; fail "package build or lintian"; }
grep '^  ' "$W/package.log" | indent
debs=$root/build/deb
for p in larivd lariv-tools liblariv-dev; do
  ls "$debs/${p}"_*.deb >/dev/null 2>&1 || fail "no $p package"
done
say "lintian: no errors or warnings"

say "larivd and lariv-tools install with apt into a plain debian:bookworm"
"${P[@]}" run --rm --network=host "${LIMITS[@]}" -v "$debs:/pkg:ro" docker.io/library/debian:bookworm sh -ec '
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /pkg/larivd_*.deb /pkg/lariv-tools_*.deb >/dev/null
    larivd --version
    lariv --version
    larivd --check-config --config /etc/lariv/larivd.json
    dpkg-query -W -f="\${Conffiles}\n" larivd | grep -q "/etc/lariv/larivd.json"
    test -f /lib/systemd/system/larivd.service
    test -f /usr/share/man/man1/larivd.1.gz && test -f /usr/share/man/man1/lariv.1.gz
    # ExecReload must name a program this minimal system has (not /bin/kill: procps is not here).
    reload=$(sed -n "s/^ExecReload=//p" /lib/systemd/system/larivd.service)
    test -x "${reload%% *}" || { echo "ExecReload: ${reload%% *} is missing"; exit 1; }
    echo "ExecReload=$reload: ${reload%% *} present (/bin/kill: $(test -e /bin/kill && echo present || echo absent))"
    echo "conffile /etc/lariv/larivd.json, unit, man pages: ok"' \
  >"$W/install.log" 2>&1 || { cat "$W/install.log"; fail "larivd/lariv-tools install"; }
indent "$W/install.log"

say "liblariv-dev: apt-get install ./liblariv-dev_*.deb cmake g++, then a find_package(lariv) consumer"
"${P[@]}" run --rm --network=host "${LIMITS[@]}" -v "$debs:/pkg:ro" \
  -v "$root/tests/deb-consumer:/consumer:ro" docker.io/library/debian:bookworm sh -ec '
    apt-get update -qq >/dev/null
    cd /pkg
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ./liblariv-dev_*.deb cmake g++ >/dev/null
    echo "CMake generator: Unix Makefiles; make: $(command -v make || echo missing) (from cmake'"'"'s Recommends)"
    cmake -S /consumer -B /tmp/consumer -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build /tmp/consumer -j2 >/dev/null
    /tmp/consumer/consumer' >"$W/consumer.log" 2>&1 || { tail -30 "$W/consumer.log"; fail "liblariv-dev consumer"; }
indent "$W/consumer.log"

say "systemd in a container: bookworm + systemd + the larivd package, booted with --systemd=always"
mkdir -p "$W/sd"
cp "$debs"/larivd_*.deb "$W/sd/"
cat >"$W/sd/Containerfile" <<'EOF'
FROM debian:bookworm
COPY larivd_*.deb /tmp/
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd systemd-sysv \
      /tmp/larivd_*.deb >/dev/null \
 && rm -rf /var/lib/apt/lists/* /tmp/*.deb
EOF
"${P[@]}" build --pull=never --network=host --format=docker -t lariv/systemd:test "$W/sd" >"$W/sd.log" 2>&1 \
  || { tail -20 "$W/sd.log"; fail "systemd image build"; }
# --cap-add=SYS_ADMIN: the unit's sandboxing (ProtectSystem, PrivateTmp, PrivateDevices, ...)
# needs mount namespaces; without it every start fails with 226/NAMESPACE. --network=none: a
# loopback of its own, so the package's default ports 7411/7412 cannot collide with the host's.
"${P[@]}" run -d --name "$sd" --systemd=always --cap-add=SYS_ADMIN --network=none "${LIMITS[@]}" \
  lariv/systemd:test /sbin/init >/dev/null || fail "podman run --systemd=always"
booted=""
for _ in $(seq 1 150); do
  booted=$("${P[@]}" exec "$sd" systemctl is-system-running 2>/dev/null || true)
  case "$booted" in running|degraded) break ;; esac
  sleep 0.2
done
case "$booted" in
  running|degraded)
    say "systemd boots in the container (is-system-running: $booted)"
    "${P[@]}" exec "$sd" bash -ec '
      say() { echo "container-test:   $*"; }
      out=$(systemd-analyze verify --man=no /lib/systemd/system/larivd.service 2>&1) || { echo "$out"; exit 1; }
      [ -z "$out" ] || { echo "systemd-analyze verify: $out"; exit 1; }
      say "systemd-analyze verify larivd.service: clean"
      [ "$(systemctl is-enabled larivd)" = enabled ]
      [ "$(systemctl is-active larivd)" = active ]
      say "the package enabled larivd and it started at boot"
      systemctl stop larivd
      # Type=notify: start returns after READY=1, so /healthz answers at once (no retry loop).
      systemctl start larivd
      larivd --health-check --config /etc/lariv/larivd.json
      say "systemctl start returned; /healthz answered right away"
      say "$(systemctl show -p Type -p NotifyAccess -p WatchdogUSec larivd | tr "\n" " ")"
      status=$(systemctl show -p StatusText --value larivd)
      say "StatusText: $status"
      case "$status" in *listen=127.0.0.1:7411*) ;; *) exit 1 ;; esac
      # The watchdog: with WatchdogSec=2s larivd must still be the same process 5 s later; and
      # stopped (SIGSTOP: no more WATCHDOG=1), systemd must kill and restart it.
      mkdir -p /run/systemd/system/larivd.service.d
      printf "[Service]\nWatchdogSec=2s\nTimeoutAbortSec=1s\n" >/run/systemd/system/larivd.service.d/watchdog.conf
      systemctl daemon-reload
      systemctl restart larivd
      [ "$(systemctl show -p WatchdogUSec --value larivd)" = 2s ]
      pid=$(systemctl show -p MainPID --value larivd)
      sleep 5
      [ "$(systemctl show -p MainPID --value larivd)" = "$pid" ]
      [ "$(systemctl show -p NRestarts --value larivd)" = 0 ]
      [ "$(systemctl is-active larivd)" = active ]
      say "WatchdogSec=2s: still pid $pid after 5 s, no restart (WATCHDOG=1 keeps arriving)"
      kill -STOP "$pid"
      for i in $(seq 1 60); do
        [ "$(systemctl show -p NRestarts --value larivd)" = 1 ] && [ "$(systemctl is-active larivd)" = active ] && break
        sleep 0.2
      done
      [ "$(systemctl show -p NRestarts --value larivd)" = 1 ]
      [ "$(systemctl show -p MainPID --value larivd)" != "$pid" ]
      journalctl -u larivd --no-pager | grep -q "Watchdog timeout"
      say "SIGSTOPped: \"Watchdog timeout\", killed and restarted as pid $(systemctl show -p MainPID --value larivd)"
      rm -r /run/systemd/system/larivd.service.d
      systemctl daemon-reload
      systemctl reload larivd
      for i in 1 2 3 4 5 6 7 8 9 10; do
        journalctl -u larivd --no-pager | grep -q "SIGHUP: reloaded" && break
        sleep 0.2
      done
      journalctl -u larivd --no-pager | grep -q "SIGHUP: reloaded"
      [ "$(systemctl show -p SubState --value larivd)" = running ]
      say "systemctl reload exits 0; the journal shows \"SIGHUP: reloaded\"; the unit is running"
      systemctl stop larivd
      [ "$(systemctl is-active larivd || true)" = inactive ]
      [ "$(systemctl show -p Result --value larivd)" = success ]
      journalctl -u larivd --no-pager | grep -q "larivd stopped"
      say "systemctl stop: drained, \"larivd stopped\" in the journal, Result=success"' \
      >"$W/systemd.log" 2>&1 || {
        cat "$W/systemd.log"
        "${P[@]}" exec "$sd" journalctl -u larivd --no-pager 2>&1 | tail -20 >&2 || true
        fail "systemd unit checks"
      }
    cat "$W/systemd.log"
    ;;
  *)
    say "systemd did not boot in the container (is-system-running: ${booted:-no answer}): fallback"
    "${P[@]}" logs "$sd" 2>&1 | tail -10 || true
    "${P[@]}" run --rm "${LIMITS[@]}" lariv/systemd:test bash -ec '
      systemd-analyze verify --man=no /lib/systemd/system/larivd.service
      reload=$(sed -n "s/^ExecReload=//p" /lib/systemd/system/larivd.service)
      test -x "${reload%% *}"' || fail "systemd-analyze verify (fallback)"
    say "fallback: systemd-analyze verify clean; ExecReload's program exists"
    ;;
esac
"${P[@]}" rm -f "$sd" >/dev/null

say "PASS"
