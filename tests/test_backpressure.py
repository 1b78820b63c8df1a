"""Backpressure: a WebSocket client that stops reading does not make the server buffer without bound;
past the send deadline its connection is aborted and its turns cancelled, and the server keeps serving."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import API_KEY, ServerProcess, make_client


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("backpressure")
    server = ServerProcess("memory", tmp / "server.log", ("--limit", "send_deadline_s=1")).start()
    yield server
    server.stop()


def masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
    body = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return header + mask + body


def open_connections(server: ServerProcess) -> float:
    with urllib.request.urlopen(f"{server.origin}/metrics", timeout=10) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("loopwire_open_connections "):
                return float(line.split()[1])
    raise AssertionError("no open-connections gauge")


def test_a_client_that_stops_reading_is_cut_off_after_the_send_deadline(impatient: ServerProcess) -> None:
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills fast
    raw.connect(("127.0.0.1", impatient.port))
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        (
            f"GET /v1/responses HTTP/1.1\r\nHost: 127.0.0.1:{impatient.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {API_KEY}\r\n\r\n"
        ).encode()
    )
    handshake = b""
    while b"\r\n\r\n" not in handshake:
        handshake += raw.recv(1)
    assert handshake.startswith(b"HTTP/1.1 101")
    instructions = "x" * 300_000  # echoed in every response.created / in_progress / completed
    for lane in range(16):
        frame = {
            "type": "response.create",
            "model": "sim",
            "input": "hi",
            "instructions": instructions,
            "store": False,
            "stream_id": f"lane-{lane}",
        }
        raw.sendall(masked_text_frame(json.dumps(frame).encode()))
    # Now read nothing. The server fills the socket, waits for the deadline, then aborts the connection.
    deadline = time.monotonic() + 20
    while open_connections(impatient) > 0:
        assert time.monotonic() < deadline, "the stalled connection was never closed"
        time.sleep(0.1)
    raw.close()
    assert impatient.alive()
    assert make_client(impatient.base_url).responses.create(model="sim", input="next").status == "completed"
    assert "stopped reading" in impatient.log_text()
