"""`make demo`'s agent demo, run for a few turns against a real server with timing events on: it prints the
per-turn table, the server's own time (read from `loopwire.timing`) and the SDK's sync client line."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, ServerProcess


@pytest.fixture(scope="module")
def timed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("demo")
    server = ServerProcess("memory", tmp / "server.log", ("--timing-events", "on")).start()
    yield server
    server.stop()


def test_the_demo_shows_both_transports_and_the_servers_own_time(timed_server: ServerProcess) -> None:
    demo = ROOT / "examples" / "agent_demo.py"
    args = ["--base-url", timed_server.base_url, "--turns", "3", "--server-pid", str(timed_server.pid)]
    result = subprocess.run(
        [sys.executable, str(demo), *args], capture_output=True, text=True, timeout=120, check=True
    )
    out = result.stdout
    rows = [line for line in out.splitlines() if re.match(r"\| [123] \|", line)]
    assert len(rows) == 3, out
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        http_ms, http_server_ms, ws_ms, ws_server_ms = (float(cells[i]) for i in (1, 2, 4, 5))
        assert 0 < http_server_ms < http_ms and 0 < ws_server_ms < ws_ms  # the server's part of the turn
    bytes_http = int(rows[-1].split("|")[4].replace(",", ""))
    bytes_ws = int(rows[-1].split("|")[7].replace(",", ""))
    assert bytes_ws < bytes_http  # turn 3 resends two tool outputs over HTTP, sends one over WebSocket mode
    server_work = r"of which the server's work \(loopwire.timing\): HTTP ([\d.]+) ms, WebSocket ([\d.]+)"
    summary = re.search(server_work, out)
    assert summary is not None and float(summary[1]) > 0 and float(summary[2]) > 0, out
    assert re.search(r"synchronous WebSocket client on the same turns: median [\d.]+ ms", out), out
