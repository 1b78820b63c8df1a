"""The processes a benchmark or a test measures against: `loopwire serve` on a free loopback port (one per
engine speed for the agent benchmark), and one link emulator per (server, profile), started ready and
always stopped.

Owns starting, readiness and stopping of those subprocesses; must not measure or talk the protocol.
The test suite's server fixture is `ServerProcess` too (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import os
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
STOP_TIMEOUT_S = 10.0
PORT_RACE_TRIES = 3
"""A free port can be taken between probing and binding: start again on another one."""


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


class LoopbackHttp:
    """A process serving HTTP on 127.0.0.1:`port`; `base_url` is its OpenAI-style "http://127.0.0.1:P/v1"."""

    port: int

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"


class ServerProcess(LoopbackHttp):
    """One `python -m loopwire serve` subprocess on 127.0.0.1. `base_url` is "http://127.0.0.1:P/v1".

    `log_path`: where its stdout and stderr go (appended; None: discarded). `port`: 0 for a free port on
    every start, else always this one (for restarts on the same address)."""

    def __init__(
        self,
        store: str,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        *,
        port: int = 0,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        self.store = store
        self.ready_timeout_s = ready_timeout_s  # a real model loads for seconds before the server answers
        self.log_path = log_path
        self.extra_args = tuple(extra_args)
        self.fixed_port = port
        self.env = env or {}
        self.cwd = cwd
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the server was not started"
        return self.proc.pid

    def log_text(self) -> str:
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "loopwire", "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--store", self.store, *self.extra_args,
        ]  # fmt: skip

    def start(self) -> ServerProcess:
        """Start it and return once /healthz answers; RuntimeError (with the log) when it never does."""
        failure = ""
        for _ in range(PORT_RACE_TRIES):
            self.port = self.fixed_port or free_port()
            with contextlib.ExitStack() as files:
                output = (
                    files.enter_context(self.log_path.open("ab"))
                    if self.log_path is not None
                    else subprocess.DEVNULL
                )
                self.proc = subprocess.Popen(
                    self.command(),
                    cwd=self.cwd,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                )
            try:
                wait_http(f"{self.origin}/healthz", self.proc, self.ready_timeout_s)
                if self._answers_itself():
                    return self
                failure = f"another process answered on port {self.port}"
            except RuntimeError as error:
                failure = f"{error}\n{self.log_text()}"
            self.stop()
        raise RuntimeError(f"loopwire serve did not become ready: {failure}")

    def _answers_itself(self) -> bool:
        """Whether /healthz names this process: a free port probed here can be taken by another server
        before ours binds it, and then ours exits while the other answers."""
        assert self.proc is not None
        try:
            with urllib.request.urlopen(f"{self.origin}/healthz", timeout=2) as answer:
                body = json.loads(answer.read())
        except (OSError, ValueError):
            return False
        return isinstance(body, dict) and body.get("pid") == self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM, wait for a clean exit (kill only if it hangs); returns the exit code."""
        if self.proc is None:
            return None
        stop_process(self.proc, STOP_TIMEOUT_S)
        return self.proc.returncode


def start_nodes(count: int, store: str, directory: Path, extra: Sequence[str] = ()) -> list[ServerProcess]:
    """`count` started servers on one store (e.g. a shared Redis), logs in `directory`; none is left
    running when one fails to start."""
    directory.mkdir(parents=True, exist_ok=True)
    nodes = [ServerProcess(store, directory / f"node-{index}.log", extra) for index in range(count)]
    try:
        for node in nodes:
            node.start()
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


@contextlib.contextmanager
def serving(store: str, extra_args: Sequence[str] = ()) -> Iterator[ServerProcess]:
    """A started `ServerProcess` (output discarded), stopped on leaving."""
    server = ServerProcess(store, None, extra_args)
    try:
        yield server.start()
    finally:
        server.stop()


def _wait_port(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the link emulator exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the link emulator on port {port} did not come up")


def stop_process(process: subprocess.Popen[bytes] | subprocess.Popen[str], timeout_s: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)


@contextlib.contextmanager
def loopwire_server(
    speed: Speed, workdir: Path, extra_args: Sequence[str] = ()
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`loopwire serve` with the sim engine at `speed`, SQLite under `workdir`, timing events on (the
    client reads the engine's model time and render counts from them), permessage-deflate offered."""
    args = ["--timing-events", "on", "--ws-deflate", "on", *speed.server_args(), *extra_args]
    with serving(f"sqlite:{workdir / f'bench-{speed.name}.db'}", args) as server:
        assert server.proc is not None
        yield server.proc, server.port


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
        stop_process(emulator)
