"""`make demo`: start a loopwire server on a free port (sim engine, temporary SQLite store, timing events
on), run the agent demo against it over HTTP and WebSocket mode with the official `openai` SDK, then stop
the server.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from loopwire.bench.processes import serving


def main() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="loopwire-demo-") as tmp,
        serving(f"sqlite:{tmp}/demo.db", ["--timing-events", "on"]) as server,
    ):
        demo = Path(__file__).with_name("agent_demo.py")
        command = [sys.executable, str(demo), "--base-url", server.base_url, "--server-pid", str(server.pid)]
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
