"""What the benchmark scripts share: a free port, a `loopwire serve` subprocess, readiness, and the
per-turn results table.

Owns starting and stopping the server under test and holding samples; measures nothing itself.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Sample = TypeVar("Sample")


@dataclass
class Results(Generic[Sample]):
    """One transport's samples by turn number, and the size each conversation's history reached."""

    turns: dict[int, list[Sample]] = field(default_factory=dict)
    history_bytes: list[int] = field(default_factory=list)

    def add(self, turn: int, sample: Sample) -> None:
        self.turns.setdefault(turn, []).append(sample)

    def window(self, turns: range) -> list[Sample]:
        return [sample for turn in turns for sample in self.turns.get(turn, [])]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError as error:
            if getattr(error, "code", None) is not None:  # an HTTP error status: it is up
                return
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


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
