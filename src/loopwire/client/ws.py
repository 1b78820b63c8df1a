"""WebSocket transport: one picows connection in WebSocket mode, its frames handed to the running turn.

Owns the socket (connect, send, receive, close, age, retirement); no retry, replay or delta rules.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator, Mapping

import picows

from .errors import ConnectionLost, RequestError, TransportError, UpgradeRefused
from .events import CONNECTION_RETIRED
from .options import SessionOptions
from .result import TurnMetrics

_TEXT = picows.WSMsgType.TEXT
_BINARY = picows.WSMsgType.BINARY
_CONTINUATION = picows.WSMsgType.CONTINUATION
_CLOSE = picows.WSMsgType.CLOSE
_RETIRED_MARK = CONNECTION_RETIRED.encode()


def websocket_url(base_url: str) -> str:
    """`http://h:p/v1` → `ws://h:p/v1/responses` (https → wss), as the openai SDK derives it."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return base + "/responses"


class _Listener(picows.WSListener):
    """picows callbacks: complete messages go to `frames` while a turn is reading; between turns only
    an unasked age-limit notice matters (the socket is retiring)."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: deque[bytes] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.reading = False
        self.closed = False
        self.retiring = False
        self._fragments: list[bytes] = []

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        kind = frame.msg_type
        if kind in (_TEXT, _BINARY):
            if frame.fin:
                self._message(frame.get_payload_as_bytes())
            else:
                self._fragments = [frame.get_payload_as_bytes()]
        elif kind == _CONTINUATION:
            self._fragments.append(frame.get_payload_as_bytes())
            if frame.fin:
                message, self._fragments = b"".join(self._fragments), []
                self._message(message)
        elif kind == _CLOSE:
            self.retiring = True
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def _message(self, payload: bytes) -> None:
        if self.reading:
            self.frames.append(payload)
            self._wake()
        elif _RETIRED_MARK in payload:
            self.retiring = True

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class WsConnection:
    """An open socket. `exchange` sends one `response.create` frame and yields the frames that follow
    until the caller stops reading (at the turn's terminal event)."""

    def __init__(
        self, transport: picows.WSTransport, listener: _Listener, read_timeout_s: float | None
    ) -> None:
        self._transport = transport
        self._listener = listener
        self._read_timeout_s = read_timeout_s
        self.opened_at = time.monotonic()

    @classmethod
    async def open(cls, url: str, headers: Mapping[str, str], options: SessionOptions) -> WsConnection:
        """Connect and upgrade. Raises UpgradeRefused for a non-101 answer (RequestError for 401/403: a
        bad key is not a transport problem) and TransportError when the server cannot be reached."""
        try:
            transport, listener = await asyncio.wait_for(
                picows.ws_connect(
                    _Listener,
                    url,
                    extra_headers=dict(headers),
                    websocket_handshake_timeout=options.connect_timeout_s,
                    max_frame_size=options.max_frame_bytes,
                ),
                options.connect_timeout_s,
            )
        except picows.WSHandshakeError as error:
            answer = getattr(error, "response", None)  # absent in some picows versions
            if answer is None:
                raise TransportError(f"WebSocket handshake with {url} failed: {error}") from error
            status, body = int(answer.status), getattr(error, "raw_body", None) or b""
            if status in (401, 403):
                raise RequestError.from_http(status, body) from error
            raise UpgradeRefused(status, body) from error
        except (OSError, TimeoutError, picows.WSError) as error:
            raise TransportError(f"could not open a WebSocket to {url}: {error!r}") from error
        if not isinstance(listener, _Listener):  # pragma: no cover - picows returns what the factory made
            raise TypeError("unexpected listener")
        return cls(transport, listener, options.read_timeout_s)

    @property
    def usable(self) -> bool:
        """Open, and not announced as retiring by the server."""
        return not self._listener.closed and not self._listener.retiring

    def age(self, now: float) -> float:
        return now - self.opened_at

    def mark_retiring(self) -> None:
        self._listener.retiring = True

    async def exchange(self, body: bytes, metrics: TurnMetrics) -> AsyncGenerator[bytes, None]:
        listener = self._listener
        if listener.closed:
            raise ConnectionLost("the socket closed before the request was sent")
        listener.frames.clear()
        listener.reading = True
        try:
            self._transport.send(_TEXT, body)
            metrics.bytes_up += len(body)
            while True:
                while listener.frames:
                    payload = listener.frames.popleft()
                    metrics.bytes_down += len(payload)
                    yield payload
                if listener.closed:
                    raise ConnectionLost("the socket closed during the turn")
                await self._wait()
        finally:
            listener.reading = False
            if any(_RETIRED_MARK in payload for payload in listener.frames):
                listener.retiring = True  # the age-limit notice came right behind the turn's last event
            listener.frames.clear()

    async def _wait(self) -> None:
        listener = self._listener
        waiter = asyncio.get_running_loop().create_future()
        listener.waiter = waiter
        try:
            if self._read_timeout_s is None:
                await waiter
            else:
                try:
                    await asyncio.wait_for(waiter, self._read_timeout_s)
                except TimeoutError:
                    self.abort()
                    raise ConnectionLost(f"no event for {self._read_timeout_s:g} s") from None
        finally:
            listener.waiter = None

    def abort(self) -> None:
        """Drop the connection now (the server cancels whatever it was running for it)."""
        self._listener.closed = True
        self._transport.disconnect(graceful=False)

    async def close(self, timeout_s: float = 1.0) -> None:
        """Close handshake, then disconnect; waits at most `timeout_s` for the peer."""
        if self._listener.closed:
            return
        self._listener.retiring = True
        try:
            self._transport.send_close(picows.WSCloseCode.OK)
            self._transport.disconnect()
            await asyncio.wait_for(self._transport.wait_disconnected(), timeout_s)
        except (TimeoutError, OSError):
            self.abort()
