"""The README's embedding example as a user runs it: the binary built from the README's own code
block serves Lariv-protocol clients, its hooks act (on_open's welcome frame, on_message dropping a
SEND, the mailbox host session receiving one), and SIGTERM shuts it down cleanly.

Usage: readme_embed_test.py PATH_TO_readme_embed
"""
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SCALE  # noqa: E402

import socket  # noqa: E402


def main():
    exe = sys.argv[1]
    out_path = f"/tmp/readme-embed-{os.getpid()}.log"
    out = open(out_path, "w+")
    p = subprocess.Popen([exe], stdout=out, stderr=subprocess.STDOUT)
    try:
        port = mailbox = None
        end = time.time() + 10 * SCALE
        while time.time() < end and (port is None or mailbox is None):
            time.sleep(0.05)
            text = open(out_path).read()
            m = re.search(r"Lariv protocol on 127\.0\.0\.1:(\d+)", text)
            port = int(m.group(1)) if m else None
            m = re.search(r"mailbox is ([0-9a-f]{32})", text)
            mailbox = m.group(1) if m else None
        assert port and mailbox, f"the example did not print its port and mailbox id:\n{open(out_path).read()}"

        s = socket.create_connection(("127.0.0.1", port), timeout=10 * SCALE)
        f = s.makefile("rb")
        s.sendall(b'HELLO {"name":"readme-user"}\r\n')
        head = f.readline().split()
        assert head[0] == b"+HELLO", head
        f.read(int(head[1]))
        f.readline()
        assert f.readline() == b"+OK welcome\r\n", "on_open's send_frame did not arrive"
        # on_message drops "drop me": the sender is told unknown_session.
        s.sendall(b"SEND %s 7 t1\r\ndrop me\r\n" % mailbox.encode())
        line = f.readline()
        assert line.startswith(b"ACK t1 unknown_session"), line
        # Anything else reaches the host's own session.
        s.sendall(b"SEND %s 5 t2\r\nhello\r\n" % mailbox.encode())
        line = f.readline()
        assert line == b"ACK t2 ok\r\n", line
        s.sendall(b"QUIT\r\n")
        s.close()
        end = time.time() + 5 * SCALE
        while time.time() < end and "readme-user" not in open(out_path).read():
            time.sleep(0.05)
        time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=20 * SCALE)
        text = open(out_path).read()
        print(text)
        assert rc == 0, f"exit status {rc}"
        assert "hello from readme-user (127.0.0.1:" in text, "on_open did not run"
        assert "mailbox: 5 bytes from" in text, "the mailbox did not get the SEND"
        assert "mailbox: 7 bytes" not in text, "on_message did not drop the SEND"
        assert re.search(r"[0-9a-f]{32} left: client_quit", text), "on_close did not run"
        assert "shutdown: clean" in text, "no clean shutdown"
        print("readme embed example: ok")
    finally:
        if p.poll() is None:
            p.kill()
        os.unlink(out_path)


if __name__ == "__main__":
    main()
