"""`make demo`: start a loopwire server on a free port (sim engine, temporary SQLite store), run the agent
demo against it over HTTP and WebSocket mode with the official `openai` SDK, then stop the server.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"loopwire serve exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("loopwire serve did not become ready within 30 s")


def main() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="loopwire-demo-") as tmp:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loopwire",
                "serve",
                "--port",
                str(port),
                "--store",
                f"sqlite:{tmp}/demo.db",
            ]
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}/healthz", server)
            demo = Path(__file__).with_name("agent_demo.py")
            subprocess.run(
                [sys.executable, str(demo), "--base-url", f"http://127.0.0.1:{port}/v1"], check=True
            )
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
