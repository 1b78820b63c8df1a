"""The aiohttp client to the upstream: one keep-alive HTTP client for HTTP + SSE and WebSocket upgrades.

Owns connecting, auth headers, timed reads and turning transport failures into UpstreamFailure; must not
parse events nor decide about retries or which socket a turn uses.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from ..common.upstream_http import KeepalivePool, ReadClock, drain, read_error_body, upstream_headers
from ..common.upstream_models import models_url, upstream_models
from .events import UpstreamFailure, error_body_failure
from .settings import ResponsesSettings

log = logging.getLogger("loopwire.upstream.responses")

"""How much of a non-200 answer is read to find its error message."""


class UpgradeRefused(Exception):
    """The upstream answered the WebSocket upgrade with something other than 101 (426: no WebSocket mode)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the upstream refused the WebSocket upgrade with HTTP {status}")
        self.status = status


class Reads(ReadClock):
    """The read clock of one upstream response, with this engine's timeouts and failure."""

    __slots__ = ()

    def __init__(self, settings: ResponsesSettings) -> None:
        super().__init__(settings.first_byte_timeout_s, settings.idle_timeout_s)

    def timed_out(self) -> UpstreamFailure:
        what = f"send anything for {self.idle_s:g} s" if self.got_data else "send its first event in time"
        return UpstreamFailure(f"the upstream did not {what}", code="upstream_timeout")


class SseBody:
    """One 200 SSE answer being read: `read()` returns each network read's bytes (b"" at the end)."""

    __slots__ = ("_reads", "_response")

    def __init__(self, response: aiohttp.ClientResponse, reads: Reads) -> None:
        self._response = response
        self._reads = reads

    async def read(self) -> bytes:
        try:
            async with asyncio.timeout_at(self._reads.deadline()):
                data = await self._response.content.readany()
        except TimeoutError:
            raise self._reads.timed_out() from None
        except (aiohttp.ClientError, OSError) as error:
            log.warning("the upstream cut the stream: %r", error)
            raise UpstreamFailure("the upstream closed the connection mid-stream") from None
        if data:
            self._reads.got_data = True
        return data

    async def drain(self) -> None:
        """Read to the end of the body (briefly) so the keep-alive connection goes back to the pool."""
        await drain(self._response)

    def close(self) -> None:
        """Reused when read to its end, else closed (which also tells the upstream to stop)."""
        self._response.release()


class UpstreamClient:
    """The keep-alive client every HTTP request and WebSocket upgrade to the upstream goes through."""

    def __init__(self, settings: ResponsesSettings) -> None:
        self.settings = settings
        self._http = KeepalivePool(
            "responses",
            limit=settings.max_connections + settings.max_sockets,
            keepalive_s=settings.keepalive_s,
            connect_timeout_s=settings.connect_timeout_s,
            headers=upstream_headers(settings.api_key, settings.extra_headers),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def post(self, body: bytes) -> SseBody:
        """POST a streamed create and wait for a 200; any other outcome is an UpstreamFailure (with
        `replay` set when the upstream did not find the previous response)."""
        http = self._http.client()
        reads = Reads(self.settings)
        try:
            async with asyncio.timeout_at(reads.deadline()):
                response = await http.post(
                    self.settings.http_endpoint,
                    data=body,
                    headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
                    allow_redirects=False,
                )
        except aiohttp.ConnectionTimeoutError:
            raise UpstreamFailure(
                f"the upstream did not accept a connection within {self.settings.connect_timeout_s:g} s",
                code="upstream_timeout",
            ) from None
        except TimeoutError:
            raise reads.timed_out() from None
        except (aiohttp.ClientError, OSError) as error:
            log.warning("the upstream (%s) could not be reached: %r", self.settings.http_endpoint, error)
            raise UpstreamFailure("the upstream could not be reached") from None
        if response.status == 200:
            return SseBody(response, reads)
        data = await read_error_body(response, reads.deadline())
        raise error_body_failure(response.status, data, response.reason)

    async def count_input_tokens(self, body: bytes) -> int | None:
        """The upstream's own count for a create body, or None when it offers none (404, an error, a
        timeout): the caller estimates then."""
        http = self._http.client()
        settings = self.settings
        try:
            async with asyncio.timeout(settings.connect_timeout_s + settings.first_byte_timeout_s):
                async with http.post(
                    settings.http_endpoint + "/input_tokens",
                    data=body,
                    headers={"Content-Type": "application/json"},
                    allow_redirects=False,
                ) as response:
                    if response.status != 200:
                        log.debug("the upstream answered /input_tokens with HTTP %s", response.status)
                        return None
                    answer = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as error:
            log.debug("the upstream could not count tokens: %r", error)
            return None
        count = answer.get("input_tokens") if isinstance(answer, dict) else None
        return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None

    async def models(self) -> list[str] | None:
        """The model ids the upstream lists on `GET /models` (None when it lists none)."""
        settings = self.settings
        url = models_url(settings.http_endpoint, "/responses")
        return await upstream_models(
            self._http.client(), url, settings.connect_timeout_s + settings.first_byte_timeout_s
        )

    async def connect(self) -> aiohttp.ClientWebSocketResponse:
        """A new upstream WebSocket; UpgradeRefused when the upstream answers the upgrade without 101."""
        http = self._http.client()
        settings = self.settings
        try:
            async with asyncio.timeout(settings.connect_timeout_s):
                return await http.ws_connect(
                    settings.ws_endpoint,
                    autoclose=True,
                    autoping=True,
                    max_msg_size=settings.max_message_bytes,
                    compress=0,
                )
        except aiohttp.WSServerHandshakeError as error:
            raise UpgradeRefused(error.status) from None
        except TimeoutError:
            raise UpstreamFailure(
                f"the upstream did not accept a WebSocket within {settings.connect_timeout_s:g} s",
                code="upstream_timeout",
            ) from None
        except (aiohttp.ClientError, OSError) as error:
            log.warning("the upstream (%s) could not be reached: %r", settings.ws_endpoint, error)
            raise UpstreamFailure("the upstream could not be reached") from None
