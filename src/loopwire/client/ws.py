"""WebSocket transport: one picows connection in WebSocket mode, its frames handed to the running turn.

Owns the socket (connect, send, receive, close, age, retirement); no retry, replay or delta rules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping

import picows

from .errors import RequestError, TransportError, UpgradeRefused
from .inbox import FrameInbox
from .options import SessionOptions
from .result import TurnMetrics
from .socket import ClientSocket

_TEXT = picows.WSMsgType.TEXT
_BINARY = picows.WSMsgType.BINARY
_CONTINUATION = picows.WSMsgType.CONTINUATION
_CLOSE = picows.WSMsgType.CLOSE


def websocket_url(base_url: str) -> str:
    """`http://h:p/v1` → `ws://h:p/v1/responses` (https → wss), as the openai SDK derives it."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return base + "/responses"


class _Listener(picows.WSListener):
    """picows callbacks: complete messages go to the inbox; a close frame retires the socket."""

    def __init__(self) -> None:
        super().__init__()
        self.inbox = FrameInbox()
        self._fragments: list[bytes] = []

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        kind = frame.msg_type
        if kind in (_TEXT, _BINARY):
            if frame.fin:
                self.inbox.deliver(frame.get_payload_as_bytes())
            else:
                self._fragments = [frame.get_payload_as_bytes()]
        elif kind == _CONTINUATION:
            self._fragments.append(frame.get_payload_as_bytes())
            if frame.fin:
                message, self._fragments = b"".join(self._fragments), []
                self.inbox.deliver(message)
        elif kind == _CLOSE:
            self.inbox.retiring = True
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        self.inbox.disconnected()


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
        self.resumed_from: ClientSocket | None = None

    @property
    def inbox(self) -> FrameInbox:
        return self._listener.inbox

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
        inbox = self._listener.inbox
        return not inbox.closed and not inbox.retiring

    def age(self, now: float) -> float:
        return now - self.opened_at

    def mark_retiring(self) -> None:
        self._listener.inbox.retiring = True

    def exchange(self, body: bytes, metrics: TurnMetrics) -> AsyncGenerator[bytes, None]:
        return self._listener.inbox.exchange(self._send, body, metrics, self._read_timeout_s, self.abort)

    async def _send(self, body: bytes) -> None:
        self._transport.send(_TEXT, body)

    def abort(self) -> None:
        """Drop the connection now (the server cancels whatever it was running for it)."""
        self._listener.inbox.closed = True
        self._transport.disconnect(graceful=False)

    async def close(self, timeout_s: float = 1.0) -> None:
        """Close handshake, then disconnect; waits at most `timeout_s` for the peer."""
        inbox = self._listener.inbox
        if inbox.closed:
            return
        inbox.retiring = True
        try:
            self._transport.send_close(picows.WSCloseCode.OK)
            self._transport.disconnect()
            await asyncio.wait_for(self._transport.wait_disconnected(), timeout_s)
        except (TimeoutError, OSError):
            self.abort()
