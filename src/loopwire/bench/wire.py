"""The lean clients of the per-turn benchmarks: one picows WebSocket that sends a frame and waits for the
turn's terminal event, and one keep-alive aiohttp POST that reads an SSE stream to `response.completed`.

Owns sending a turn and recognising its end; must not time, retry or build requests. (The full client,
loopwire.client, does reconnects, replays and deltas; these measure the server, not a client.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp
import picows

TERMINAL = (b'{"type":"response.completed"', b'{"type":"error"', b'{"type":"response.failed"')
"""How the frames that end a turn begin: the turn's outcome, or the error that refused it."""
COMPLETED = TERMINAL[0]
MAX_FRAME = 64 * 1024 * 1024


class _TerminalListener(picows.WSListener):
    """Resolves `done` with the payload of the turn's terminal event (or an error event); a dropped
    connection fails it."""

    def __init__(self) -> None:
        super().__init__()
        self.done: asyncio.Future[bytes] | None = None

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type != picows.WSMsgType.TEXT or self.done is None or self.done.done():
            return
        if bytes(frame.get_payload_as_memoryview()[:32]).startswith(TERMINAL):
            self.done.set_result(frame.get_payload_as_bytes())

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("disconnected"))


class LeanSocket:
    """One WebSocket-mode connection; `turn` sends one `response.create` frame and returns the payload of
    its terminal event (response.completed, response.failed or error)."""

    def __init__(self, transport: picows.WSTransport, listener: _TerminalListener) -> None:
        self._transport = transport
        self._listener = listener

    @classmethod
    async def connect(
        cls, url: str, headers: Mapping[str, str] | None = None, handshake_timeout_s: float = 5.0
    ) -> LeanSocket:
        transport, listener = await picows.ws_connect(
            _TerminalListener,
            url,
            extra_headers=dict(headers or {}),
            max_frame_size=MAX_FRAME,
            websocket_handshake_timeout=handshake_timeout_s,
        )
        assert isinstance(listener, _TerminalListener)
        return cls(transport, listener)

    async def turn(self, frame: bytes) -> bytes:
        self._listener.done = asyncio.get_running_loop().create_future()
        self._transport.send(picows.WSMsgType.TEXT, frame)
        return await self._listener.done

    def close(self) -> None:
        self._transport.disconnect()


async def sse_turn(session: aiohttp.ClientSession, url: str, payload: bytes) -> bytes:
    """POST a streamed create and return the `response.completed` event's JSON; RuntimeError on a
    non-200 answer or a stream that ends without it."""
    async with session.post(url, data=payload, headers={"content-type": "application/json"}) as reply:
        if reply.status != 200:
            raise RuntimeError(f"HTTP {reply.status}: {(await reply.text())[:500]}")
        completed = None
        async for line in reply.content:
            if line.startswith(b"data: " + COMPLETED):
                completed = line[6:]
    if completed is None:
        raise RuntimeError("the stream ended without response.completed")
    return completed
