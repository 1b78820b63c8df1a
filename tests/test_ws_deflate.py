"""permessage-deflate: off by default; with --ws-deflate on it is negotiated and turns still stream intact
(frames then go through the websockets library's compressor, not loopwire's own framing)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from conftest import ServerProcess


@pytest.fixture(scope="module")
def deflating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("deflate")
    server = ServerProcess("memory", tmp / "server.log", ("--ws-deflate", "on")).start()
    yield server
    server.stop()


def ws_url(server: ServerProcess) -> str:
    return server.base_url.replace("http://", "ws://") + "/responses"


async def one_turn(socket: websockets.ClientConnection, text: str) -> list[dict[str, object]]:
    await socket.send(json.dumps({"type": "response.create", "model": "sim", "input": text, "store": False}))
    events = []
    while True:
        event = json.loads(await socket.recv())
        events.append(event)
        if event["type"] in ("response.completed", "error"):
            return events


async def test_deflate_is_negotiated_when_on_and_turns_stream_intact(deflating: ServerProcess) -> None:
    async with websockets.connect(ws_url(deflating), compression="deflate") as socket:
        assert socket.response is not None
        assert "permessage-deflate" in socket.response.headers.get("Sec-WebSocket-Extensions", "")
        for text in ("first", "second " * 2000):
            events = await one_turn(socket, text)
            assert events[-1]["type"] == "response.completed"
            assert [event["sequence_number"] for event in events] == list(range(len(events)))


async def test_deflate_is_off_by_default(server: ServerProcess) -> None:
    async with websockets.connect(ws_url(server), compression="deflate") as socket:
        assert socket.response is not None
        assert "Sec-WebSocket-Extensions" not in socket.response.headers
        events = await one_turn(socket, "plain frames")
        assert events[-1]["type"] == "response.completed"
