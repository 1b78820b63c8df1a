"""What the benchmark scripts share: a free port, a `loopwire serve` subprocess, readiness, and the
per-turn results table.

Owns starting and stopping the server under test and holding samples; measures nothing itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import picows

from loopwire.bench.processes import free_port, wait_http

Sample = TypeVar("Sample")

TERMINAL = (b'{"type":"response.completed"', b'{"type":"error"', b'{"type":"response.failed"')
"""How the frames that end a turn begin: the turn's outcome, or the error that refused it."""


class TerminalListener(picows.WSListener):  # type: ignore[misc]
    """Resolves `done` with the payload of the turn's terminal event (or an error event); a dropped
    connection fails it."""

    def __init__(self) -> None:
        self.done: asyncio.Future[bytes] | None = None

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type != picows.WSMsgType.TEXT or self.done is None or self.done.done():
            return
        if bytes(frame.get_payload_as_memoryview()[:32]).startswith(TERMINAL):
            self.done.set_result(frame.get_payload_as_bytes())

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("disconnected"))


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_summary(path: Path | None, args: Any, summary: dict[str, Any]) -> None:
    """The run's arguments and summary as JSON, when --json asked for it."""
    if path is not None:
        path.write_text(json.dumps({"args": vars(args) | {"json": str(path)}, "summary": summary}, indent=2))


@dataclass
class Results(Generic[Sample]):
    """One transport's samples by turn number, and the size each conversation's history reached."""

    turns: dict[int, list[Sample]] = field(default_factory=dict)
    history_bytes: list[int] = field(default_factory=list)

    def add(self, turn: int, sample: Sample) -> None:
        self.turns.setdefault(turn, []).append(sample)

    def window(self, turns: range) -> list[Sample]:
        return [sample for turn in turns for sample in self.turns.get(turn, [])]


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """loopwire.bench.processes.wait_http, ending the script with its message when the server fails."""
    try:
        wait_http(url, process, timeout_s)
    except RuntimeError as error:
        raise SystemExit(str(error)) from None


@contextlib.contextmanager
def loopwire_server(
    store: str, extra_args: Sequence[str] = ()
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`loopwire serve` on a free port, ready; yields the process and its base URL (http://127.0.0.1:P)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "loopwire", "serve", "--port", str(port), "--store", store, *extra_args]
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base + "/healthz", server)
        yield server, base
    finally:
        server.terminate()
        server.wait(30)
