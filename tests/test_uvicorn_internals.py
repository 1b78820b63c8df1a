"""server/coalesce.py against the uvicorn and websockets installed: every private name it relies on
(`UVICORN_PRIVATE`) is still there, checked on a real CoalescingWebSocketProtocol serving a real socket on
loopback, so an upgrade that removes one fails here naming it rather than somewhere in a turn.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from typing import Any

import uvicorn
import websockets
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from loopwire.server.coalesce import DRAIN, TEXT_FRAMES, UVICORN_PRIVATE, CoalescingWebSocketProtocol

METHODS = {"handle_connect": 1, "shutdown": 0, "send": 1, "connection_made": 1}
"""The overridden methods and how many arguments uvicorn passes them."""


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accepts, sends two events through TEXT_FRAMES, then waits for the drain and closes."""
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    assert TEXT_FRAMES in scope["extensions"] and DRAIN in scope["extensions"]
    await send({"type": TEXT_FRAMES, "payloads": [b'{"n": 1}', b'{"n": 2}']})
    message = await receive()
    await send({"type": "websocket.send", "text": json.dumps({"got": message["type"]})})
    await send({"type": "websocket.close", "code": 1012})


def missing_names(protocol: WebSocketsSansIOProtocol) -> list[str]:
    return [f"{name} ({why})" for name, why in UVICORN_PRIVATE.items() if not hasattr(protocol, name)]


async def test_uvicorn_private_state_is_where_coalesce_expects_it() -> None:
    for name, arguments in METHODS.items():
        method = getattr(WebSocketsSansIOProtocol, name, None)
        assert method is not None, f"uvicorn's WebSocketsSansIOProtocol no longer has {name}()"
        parameters = list(inspect.signature(method).parameters)[1:]
        assert len(parameters) == arguments, f"uvicorn's {name}() now takes {parameters}"
    config = uvicorn.Config(app, lifespan="off", log_level="warning", ws_per_message_deflate=False)
    config.load()
    state = ServerState()
    made: list[CoalescingWebSocketProtocol] = []

    def factory() -> CoalescingWebSocketProtocol:
        protocol = CoalescingWebSocketProtocol(config, state, {})
        made.append(protocol)
        return protocol

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as socket:
            assert [json.loads(await socket.recv()) for _ in range(2)] == [{"n": 1}, {"n": 2}]
            [protocol] = made
            missing = missing_names(protocol)
            assert not missing, f"uvicorn no longer has what server/coalesce.py relies on: {missing}"
            assert isinstance(protocol.writable, asyncio.Event)
            assert isinstance(protocol.queue, asyncio.Queue)
            assert protocol.handshake_complete is True and protocol.close_sent is False
            assert protocol.disconnected is False
            assert protocol.conn.state is websockets.protocol.State.OPEN and protocol.conn.extensions == []
            protocol.shutdown()  # what uvicorn calls on SIGTERM: the app is asked to drain, not closed
            assert json.loads(await socket.recv()) == {"got": DRAIN}
            try:
                await socket.recv()
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 1012
    finally:
        server.close()
        await server.wait_closed()
