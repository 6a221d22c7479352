"""The README's client example as a user runs it: built from the README's own code block, run
against a larivd this test starts; it must connect, get ok for its acked SEND to itself, receive
that message back and exit 0.

Usage: readme_client_test.py LARIVD README_CLIENT
"""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from harness import SCALE, free_port, listening, wait_for  # noqa: E402


def main():
    larivd, example = sys.argv[1], sys.argv[2]
    port = free_port()
    d = subprocess.Popen([larivd, "--port", str(port), "--monitor-port", "0", "--log-level", "warn"])
    try:
        if not wait_for(listening(port), 10 * SCALE):
            sys.exit("larivd did not listen")
        r = subprocess.run([example, f"127.0.0.1:{port}"], capture_output=True, text=True,
                           timeout=30 * SCALE)
        print(r.stdout, r.stderr)
        m = re.search(r"my id: ([0-9a-f]{32})", r.stdout)
        assert r.returncode == 0, f"exit status {r.returncode}"
        assert m, "no 'my id:' line"
        assert "verdict: ok" in r.stdout, "the acked SEND was not ok"
        assert f"from {m.group(1)}: hello" in r.stdout, "the message did not come back"
        # Without a server it reports the error and still exits.
        r = subprocess.run([example, f"127.0.0.1:{free_port()}"], capture_output=True, text=True,
                           timeout=30 * SCALE)
        assert "connect: " in r.stdout, r.stdout
        print("readme client example: ok")
    finally:
        d.terminate()
        d.wait(timeout=30)


if __name__ == "__main__":
    main()
