"""HTTP transport: POST /responses with `stream: true` over an aiohttp keep-alive pool, SSE read as it comes.

Owns the HTTP connection pool and turning one request into its event payloads; no retry, replay or rules.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping

import aiohttp

from ..protocol.sse import SseDecoder, SseError
from .errors import ConnectionLost, RequestError, StreamError
from .options import SessionOptions
from .result import TurnMetrics

DONE = b"[DONE]"
"""Some servers end a stream with this data line; loopwire's own streams end with the terminal event."""


class HttpTransport:
    """One aiohttp session (created on first use, inside the running loop) shared by every turn."""

    def __init__(self, base_url: str, headers: Mapping[str, str], options: SessionOptions) -> None:
        self.url = base_url.rstrip("/") + "/responses"
        self._headers = {
            **headers,
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
        }
        self._options = options
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            options = self._options
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=options.http_pool_size, force_close=not options.http_keepalive
                ),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=options.connect_timeout_s, sock_read=options.read_timeout_s
                ),
                headers=self._headers,
            )
        return self._session

    async def exchange(self, body: bytes, metrics: TurnMetrics) -> AsyncGenerator[bytes, None]:
        """Send one create request and yield each event's JSON payload as it arrives. Raises RequestError
        for an HTTP error status, ConnectionLost when the connection fails, StreamError for an event past
        the SSE size bound; ends when the body ends."""
        try:
            metrics.bytes_up += len(body)
            async with self._client().post(self.url, data=body) as reply:
                if reply.status != 200:
                    raw = await reply.read()
                    metrics.bytes_down += len(raw)
                    raise RequestError.from_http(reply.status, raw)
                decoder = SseDecoder()
                async for chunk in reply.content.iter_any():
                    metrics.bytes_down += len(chunk)
                    try:
                        payloads = decoder.feed_data(chunk)
                    except SseError as error:
                        raise StreamError(f"the stream from {self.url} cannot be read: {error}") from None
                    for payload in payloads:
                        if payload != DONE:
                            yield payload
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as error:
            raise ConnectionLost(f"HTTP request to {self.url} failed: {error!r}") from error

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
