"""Limits enforced by a live server at their edge: message size over HTTP and WebSocket, connection age."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from conftest import ServerProcess

LIMIT = 4000


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("limits")
    server = ServerProcess(
        "memory",
        tmp / "server.log",
        ("--limit", f"max_message_bytes={LIMIT}", "--limit", "max_connection_age_s=1.5"),
    ).start()
    yield server
    server.stop()


def body_of_size(size: int, **fields: object) -> bytes:
    """A valid create body of exactly `size` bytes (the input text is the padding)."""
    base = {"model": "sim", "input": "", **fields}
    empty = len(json.dumps(base).encode())
    base["input"] = "x" * (size - empty)
    encoded = json.dumps(base).encode()
    assert len(encoded) == size
    return encoded


def post(server: ServerProcess, body: bytes) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        server.base_url + "/responses", data=body, headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_http_body_at_the_limit_passes_and_one_past_is_413(limited: ServerProcess) -> None:
    status, body = post(limited, body_of_size(LIMIT))
    assert status == 200 and body["status"] == "completed"
    status, body = post(limited, body_of_size(LIMIT + 1))
    assert status == 413
    error = body["error"]
    assert (
        isinstance(error, dict)
        and error["code"] == "request_too_large"
        and error["type"]
        and error["message"]
    )
    status, body = post(limited, body_of_size(200))  # the server is unharmed
    assert status == 200


def ws_url(server: ServerProcess) -> str:
    return server.base_url.replace("http://", "ws://") + "/responses"


async def test_ws_frame_at_the_limit_passes_and_one_past_closes_1009(limited: ServerProcess) -> None:
    async with websockets.connect(ws_url(limited), max_size=None) as socket:
        await socket.send(body_of_size(LIMIT, type="response.create").decode())
        while True:
            event = json.loads(await socket.recv())
            assert event["type"] != "error", event
            if event["type"] == "response.completed":
                break
        await socket.send(body_of_size(LIMIT + 1, type="response.create").decode())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await socket.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_idle_connection_is_retired_at_its_age(limited: ServerProcess) -> None:
    async with websockets.connect(ws_url(limited), max_size=None) as socket:
        await socket.send(
            json.dumps({"type": "response.create", "model": "sim", "input": "once", "store": False})
        )
        while json.loads(await socket.recv())["type"] != "response.completed":
            pass
        event = json.loads(await asyncio.wait_for(socket.recv(), timeout=10))  # sent unasked at the age limit
        assert event["type"] == "error"
        assert event["error"]["code"] == "websocket_connection_limit_reached"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await socket.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


@pytest.fixture(scope="module")
def slow_and_short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("retire")
    server = ServerProcess(
        "memory", tmp / "server.log", ("--limit", "max_connection_age_s=1", "--sim-ttft-ms", "800")
    ).start()
    yield server
    server.stop()


async def test_a_turn_running_at_the_age_limit_finishes_before_the_close(
    slow_and_short_lived: ServerProcess,
) -> None:
    async with websockets.connect(ws_url(slow_and_short_lived), max_size=None) as socket:
        await asyncio.sleep(0.5)
        await socket.send(
            json.dumps({"type": "response.create", "model": "sim", "input": "slow", "store": False})
        )
        types = []
        while True:
            event = json.loads(await asyncio.wait_for(socket.recv(), timeout=10))
            types.append(event["type"])
            if event["type"] in ("error", "response.completed", "response.failed"):
                break
        assert types[0] == "response.created" and types[-1] == "response.completed", types
        event = json.loads(await asyncio.wait_for(socket.recv(), timeout=10))
        assert event["type"] == "error" and event["error"]["code"] == "websocket_connection_limit_reached"
        with pytest.raises(websockets.ConnectionClosed):
            await socket.recv()
