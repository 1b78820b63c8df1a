"""`make demo`: start a loopwire server on a free port (sim engine, temporary SQLite store), run the agent
demo against it over HTTP and WebSocket mode with the official `openai` SDK, then stop the server.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from loopwire.bench.processes import free_port, wait_http


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
            try:
                wait_http(f"http://127.0.0.1:{port}/healthz", server)
            except RuntimeError as error:
                raise SystemExit(f"loopwire serve did not become ready: {error}") from None
            demo = Path(__file__).with_name("agent_demo.py")
            subprocess.run(
                [sys.executable, str(demo), "--base-url", f"http://127.0.0.1:{port}/v1"], check=True
            )
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
