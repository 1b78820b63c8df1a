"""Fast writes for uvicorn's protocols: coalescing, and a batched text-frame send for WebSocket mode.

A turn emits ~20 events back to back; written one by one they cost a syscall and a peer wake-up each. The
transport proxy holds writes until the current loop iteration ends (loop.call_soon), so none is delayed
past it. The `loopwire.text_frames` ASGI extension lets the app hand over already-encoded JSON payloads,
framed here in one pass instead of one ASGI message, str round trip and frame object per event.
Owns only buffering and unmasked server framing; flow control and protocol state stay with uvicorn.

It subclasses uvicorn's protocols and reads some of their private state: the names are listed in
`UVICORN_PRIVATE` (and pyproject.toml pins uvicorn and websockets to the versions this is tested on);
tests/test_uvicorn_internals.py fails naming any that an upgrade removes. Framing stays by hand rather than
websockets' public `conn.send_text()` + `data_to_send()`: both leave a burst in one write, but the
sans-I/O path builds a Frame object per event, ~5x the cost of this step (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import OPEN

DRAIN = "loopwire.drain"
"""ASGI extension and receive event: on server shutdown the app gets `{"type": DRAIN}` instead of an
immediate close 1012, finishes its running turns, then closes the socket itself."""
TEXT_FRAMES = "loopwire.text_frames"
"""ASGI extension: `{"type": TEXT_FRAMES, "payloads": [bytes, ...]}` sends each payload as one text frame."""

UVICORN_PRIVATE = {
    "writable": "asyncio.Event set while the transport takes writes (flow control)",
    "queue": "the asyncio.Queue of ASGI receive events (the drain event is put on it)",
    "handshake_complete": "True once the upgrade was answered",
    "close_sent": "True once a close frame went out",
    "disconnected": "True once the connection was lost",
    "conn": "the websockets ServerProtocol (its public `state` and `extensions` are read)",
    "scope": "the ASGI scope, set by handle_connect (extensions are added to it)",
    "handle_connect": "called with the upgrade request; overridden to offer the extensions",
    "shutdown": "called by uvicorn's server on SIGTERM; overridden to drain instead of closing 1012",
    "send": "the ASGI send; overridden for the send deadline and TEXT_FRAMES",
    "connection_made": "the asyncio callback; overridden to wrap the transport",
}
"""What CoalescingWebSocketProtocol relies on in uvicorn's WebSocketsSansIOProtocol beyond the ASGI spec."""

log = logging.getLogger("loopwire.ws")


class CoalescingTransport:
    """Wraps a transport; `write` buffers until the end of the loop iteration, anything else flushes first."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._scheduled = False

    @property
    def wrapped(self) -> asyncio.Transport:
        return self._transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._pending.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(chunk) for chunk in self._pending)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _coalescing(transport: Any) -> Any:
    if isinstance(transport, CoalescingTransport):
        return transport
    return CoalescingTransport(transport, asyncio.get_running_loop())


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_coalescing(transport))


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented server text frame (RFC 6455 section 5.2)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


class CoalescingWebSocketProtocol(WebSocketsSansIOProtocol):
    send_deadline_s: float = 30.0
    """How long a send may wait for a client that stopped reading before the connection is aborted (its
    turns are then cancelled with it): the server's memory for a stalled client stays bounded."""

    @classmethod
    def with_send_deadline(cls, seconds: float) -> type[CoalescingWebSocketProtocol]:
        return type(cls.__name__, (cls,), {"send_deadline_s": seconds})

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.out = _coalescing(transport)
        super().connection_made(self.out)

    async def _wait_writable(self) -> None:
        if self.writable.is_set():
            return
        try:
            async with asyncio.timeout(self.send_deadline_s):
                await self.writable.wait()
        except TimeoutError:
            log.warning("a WebSocket client stopped reading for %ss; closing it", self.send_deadline_s)
            self.out.abort()
            raise ClientDisconnected() from None

    def handle_connect(self, event: Any) -> None:
        self.drain_requested = False
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is None:
            return
        scope["extensions"][DRAIN] = {}
        # Framing is done by hand, so offer it only when no extension (permessage-deflate) rewrites frames.
        if not self.conn.extensions:
            scope["extensions"][TEXT_FRAMES] = {}

    def shutdown(self) -> None:
        if self.handshake_complete and not self.close_sent and not getattr(self, "drain_requested", True):
            self.drain_requested = True
            self.queue.put_nowait(cast(Any, {"type": DRAIN}))
            return
        super().shutdown()

    async def send(self, message: Any) -> None:
        if self.handshake_complete:
            await self._wait_writable()
        if message["type"] != TEXT_FRAMES:
            await super().send(message)
            return
        # uvicorn never fragments a message, so a frame cannot land inside another one.
        if self.disconnected or self.close_sent or not self.handshake_complete or self.conn.state is not OPEN:
            raise ClientDisconnected()
        self.out.write(b"".join([text_frame(payload) for payload in message["payloads"]]))
