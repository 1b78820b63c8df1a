"""The processes a benchmark run measures against: one `loopwire serve` per engine speed and one link
emulator per (server, profile), each on a free loopback port, started ready and always stopped.

Owns starting, readiness and stopping of those subprocesses; must not measure or talk the protocol.
"""

from __future__ import annotations

import contextlib
import json
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..netem.command import TOTALS_PREFIX
from .grid import Speed

READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float = READY_TIMEOUT_S) -> None:
    """Returns once `url` answers at all (an HTTP error status counts: the server is up); RuntimeError
    when `process` exits first or nothing answers within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up within {timeout_s:g} s")


def _wait_port(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the link emulator exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the link emulator on port {port} did not come up")


def _stop(process: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def loopwire_server(
    speed: Speed, workdir: Path, extra_args: Sequence[str] = ()
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`loopwire serve` with the sim engine at `speed`, SQLite under `workdir`, timing events on (the
    client reads the engine's model time and render counts from them), permessage-deflate offered."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "loopwire",
        "serve",
        "--port",
        str(port),
        "--store",
        f"sqlite:{workdir / f'bench-{speed.name}.db'}",
        "--timing-events",
        "on",
        "--ws-deflate",
        "on",
        *speed.server_args(),
        *extra_args,
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", server)
        yield server, port
    finally:
        _stop(server)


class LinkProcess:
    """A running `python -m loopwire.netem`: the port to connect to, and its byte totals on demand (the
    TCP payload that crossed the link: HTTP headers, WebSocket framing and compression included)."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port

    def totals(self) -> tuple[int, int]:
        """(bytes up, bytes down) since the emulator started."""
        stdout = self.process.stdout
        assert stdout is not None
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([stdout], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                break
            line = stdout.readline()
            if not line:
                break
            if line.startswith(TOTALS_PREFIX):
                totals = json.loads(line[len(TOTALS_PREFIX) :])
                return int(totals["bytes_up"]), int(totals["bytes_down"])
        raise RuntimeError("the link emulator did not report its totals")


@contextlib.contextmanager
def link_emulator(target_port: int, profile: str) -> Iterator[LinkProcess]:
    """`python -m loopwire.netem` in its own process (so shaping never competes with the client's event
    loop), forwarding to the server."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "loopwire.netem",
        "--listen",
        f"127.0.0.1:{port}",
        "--target",
        f"127.0.0.1:{target_port}",
        "--profile",
        profile,
    ]
    emulator = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1
    )
    try:
        _wait_port(port, emulator)
        yield LinkProcess(emulator, port)
    finally:
        _stop(emulator)
