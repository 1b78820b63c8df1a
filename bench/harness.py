"""Process plumbing the benchmark scripts share: a free port, a `loopwire serve` subprocess, readiness.

Owns starting and stopping the server under test; measures nothing.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence


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
