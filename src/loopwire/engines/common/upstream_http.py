"""The keep-alive HTTP connection pool the gateway engines talk to their upstreams through.

Owns the pool every upstream engine shares (opened on first use inside the running loop, refused once
closed; its size, keep-alive, DNS cache, no decompression, no raising on statuses), the headers on every
upstream request, the clock of one response's reads (first-byte deadline, then idle timeout), reading the
bounded start of an error answer and draining a finished body; must not send requests or interpret answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

from ..base import EngineError

DRAIN_TIMEOUT_S = 1.0
MAX_ERROR_BODY_BYTES = 64 * 1024
"""How much of an upstream's error answer is read for its message."""
"""After a stream's last event, how long to wait for the end of its body so the connection is reused."""


def upstream_headers(
    api_key: str | None, extra: Mapping[str, str], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Headers on every upstream request: `base`, no compression (the streams are small and parsed as
    they arrive), the bearer key when one is set, then the operator's extra headers over all of them."""
    headers = {**(base or {}), "Accept-Encoding": "identity"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    headers.update(extra)
    return headers


class KeepalivePool:
    """Connections that stay open between turns (a new TCP connection per turn costs a round trip and the
    upstream's accept path), in one aiohttp ClientSession made on first use, inside the running loop.
    Reads are timed by the callers, per phase, so there is no total timeout."""

    def __init__(
        self,
        engine: str,
        *,
        limit: int,
        keepalive_s: float,
        connect_timeout_s: float,
        headers: Mapping[str, str],
    ) -> None:
        self._engine = engine
        self._limit = limit
        self._keepalive_s = keepalive_s
        self._connect_timeout_s = connect_timeout_s
        self._headers = dict(headers)
        self._client: aiohttp.ClientSession | None = None
        self._closed = False

    def client(self) -> aiohttp.ClientSession:
        """The open aiohttp client; an EngineError once the pool is closed (the engine was shut down)."""
        if self._closed:
            raise EngineError(f"the {self._engine} engine is closed", code="server_error")
        client = self._client
        if client is None or client.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_s,
                ttl_dns_cache=300,
            )
            client = self._client = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout_s),
                headers=self._headers,
                auto_decompress=False,
                raise_for_status=False,
            )
        return client

    async def aclose(self) -> None:
        self._closed = True
        if self._client is not None:
            await self._client.close()
            self._client = None


class ReadClock:
    """The first-byte deadline (from the request's start), then the idle timeout between reads, of one
    upstream response. The caller sets `got_data` once a read brought bytes."""

    __slots__ = ("_first_deadline", "_loop", "got_data", "idle_s")

    def __init__(self, first_byte_timeout_s: float, idle_timeout_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._first_deadline = self._loop.time() + first_byte_timeout_s
        self.idle_s = idle_timeout_s
        self.got_data = False

    def deadline(self) -> float:
        """When the next read (or the answer itself, before any data) must have come, in loop time."""
        return self._loop.time() + self.idle_s if self.got_data else self._first_deadline


async def drain(response: aiohttp.ClientResponse, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
    """Read to the end of the body (briefly) so the keep-alive connection goes back to the pool."""
    content = response.content
    try:
        async with asyncio.timeout(timeout_s):
            while not content.at_eof():
                if not await content.readany():
                    break
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass  # the connection is closed instead of reused; the turn is already complete


async def read_error_body(response: aiohttp.ClientResponse, deadline: float) -> bytes:
    """The start (at most MAX_ERROR_BODY_BYTES) of a non-200 answer's body, read before `deadline` (loop
    time); b"" when it does not come in time or the connection fails. Releases the response."""
    try:
        async with asyncio.timeout_at(deadline):
            return await response.content.read(MAX_ERROR_BODY_BYTES)
    except (TimeoutError, aiohttp.ClientError, OSError):
        return b""
    finally:
        response.release()
