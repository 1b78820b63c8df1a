"""The keep-alive aiohttp session the gateway engines talk to their upstreams through.

Owns the connector and session settings every upstream engine shares (pool size, keep-alive, DNS cache,
no decompression, no raising on statuses); must not send requests or interpret answers.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp


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
