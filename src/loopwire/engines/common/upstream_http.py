"""The keep-alive aiohttp session the gateway engines talk to their upstreams through.

Owns the connector and session settings every upstream engine shares (pool size, keep-alive, DNS cache,
no decompression, no raising on statuses) and draining a finished body; must not send requests or
interpret answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

DRAIN_TIMEOUT_S = 1.0
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


def keepalive_session(
    *, limit: int, keepalive_s: float, connect_timeout_s: float, headers: Mapping[str, str]
) -> aiohttp.ClientSession:
    """A session whose connections stay open between turns (a new TCP connection per turn costs a round
    trip and the upstream's accept path). Reads are timed by the callers, per phase, so no total timeout."""
    connector = aiohttp.TCPConnector(
        limit=limit, limit_per_host=0, keepalive_timeout=keepalive_s, ttl_dns_cache=300
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s),
        headers=dict(headers),
        auto_decompress=False,
        raise_for_status=False,
    )


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
