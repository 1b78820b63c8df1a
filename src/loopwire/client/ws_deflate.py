"""WebSocket transport with permessage-deflate: one aiohttp socket in WebSocket mode (picows has no
compression), for links where bytes cost more than CPU.

Owns that socket (connect with compression offered, send, receive, close, retirement); no retry, replay or
delta rules. bytes_up/bytes_down count message payloads before compression, like ws.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Mapping

import aiohttp

from .errors import ConnectionLost, RequestError, TransportError, UpgradeRefused
from .inbox import FrameInbox
from .options import SessionOptions
from .result import TurnMetrics
from .socket import ClientSocket

_DEFLATE_WINDOW_BITS = 15
_ENDED = (
    aiohttp.WSMsgType.CLOSE,
    aiohttp.WSMsgType.CLOSING,
    aiohttp.WSMsgType.CLOSED,
    aiohttp.WSMsgType.ERROR,
)


class DeflateWsConnection:
    """Like ws.WsConnection, with a reader task feeding the inbox. `compressed` tells whether the server
    accepted the extension."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        ws: aiohttp.ClientWebSocketResponse[bool],
        options: SessionOptions,
    ) -> None:
        self._session = session
        self._ws: aiohttp.ClientWebSocketResponse[bool] = ws
        self._read_timeout_s = options.read_timeout_s
        self.opened_at = time.monotonic()
        self.compressed = bool(ws.compress)
        self._inbox = FrameInbox()
        self.resumed_from: ClientSocket | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @property
    def inbox(self) -> FrameInbox:
        return self._inbox

    @classmethod
    async def open(cls, url: str, headers: Mapping[str, str], options: SessionOptions) -> DeflateWsConnection:
        """Connect and upgrade offering permessage-deflate. Raises UpgradeRefused for a non-101 answer
        (RequestError for 401/403) and TransportError when the server cannot be reached."""
        session = aiohttp.ClientSession(
            headers=dict(headers),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=options.connect_timeout_s),
        )
        try:
            ws = await asyncio.wait_for(
                session.ws_connect(
                    url,
                    compress=_DEFLATE_WINDOW_BITS,
                    max_msg_size=options.max_frame_bytes,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=options.connect_timeout_s),
                    decode_text=False,
                ),
                options.connect_timeout_s,
            )
        except aiohttp.WSServerHandshakeError as error:
            await session.close()
            if error.status in (401, 403):
                raise RequestError.from_http(error.status, str(error.message).encode()) from error
            raise UpgradeRefused(error.status, str(error.message).encode()) from error
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            await session.close()
            raise TransportError(f"could not open a WebSocket to {url}: {error!r}") from error
        return cls(session, ws, options)

    async def _read(self) -> None:
        ws, inbox = self._ws, self._inbox
        try:
            while True:
                message = await ws.receive()
                if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    data = message.data
                    inbox.deliver(data.encode() if isinstance(data, str) else bytes(data))
                elif message.type in _ENDED:
                    break
        except (aiohttp.ClientError, OSError):
            pass
        finally:
            inbox.disconnected()

    @property
    def usable(self) -> bool:
        return not self._inbox.closed and not self._inbox.retiring

    def age(self, now: float) -> float:
        return now - self.opened_at

    def mark_retiring(self) -> None:
        self._inbox.retiring = True

    def exchange(self, body: bytes, metrics: TurnMetrics) -> AsyncGenerator[bytes, None]:
        return self._inbox.exchange(self._send, body, metrics, self._read_timeout_s, self.abort)

    async def _send(self, body: bytes) -> None:
        try:
            await self._ws.send_str(body.decode())
        except (aiohttp.ClientError, OSError, ConnectionError) as error:
            raise ConnectionLost(f"the socket failed while sending: {error!r}") from error

    def abort(self) -> None:
        self._inbox.closed = True
        self._reader.cancel()
        transport = self._ws.get_extra_info("transport")
        if transport is not None:
            transport.abort()
        asyncio.get_running_loop().create_task(self._release())

    async def _release(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()
        await self._session.close()

    async def close(self, timeout_s: float = 1.0) -> None:
        if self._inbox.closed:
            await self._session.close()
            return
        self._inbox.retiring = True
        try:
            await asyncio.wait_for(self._ws.close(), timeout_s)
        except (TimeoutError, OSError, aiohttp.ClientError):
            self.abort()
        finally:
            self._inbox.closed = True
            self._reader.cancel()
            await self._session.close()
