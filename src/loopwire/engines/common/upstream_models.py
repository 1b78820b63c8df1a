"""What an upstream serves: the model ids its `GET /models` lists, for the gateways' `GET /v1/models`.

Owns that one request and reading its `{"data": [{"id": ...}]}` answer (anything else is "no list");
must not choose replicas or keep connections (the caller's pool does).
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

log = logging.getLogger("loopwire.engine.models")

MODELS_PATH = "/models"


def models_url(endpoint: str, path: str) -> str:
    """The `/models` URL beside an upstream endpoint (`.../v1/responses` → `.../v1/models`)."""
    return endpoint.removesuffix(path) + MODELS_PATH


async def upstream_models(http: aiohttp.ClientSession, url: str, timeout_s: float) -> list[str] | None:
    """The ids the upstream lists, or None when it lists none (an error status, a timeout, another shape)."""
    try:
        async with asyncio.timeout(timeout_s):
            async with http.get(url, allow_redirects=False) as response:
                if response.status != 200:
                    return None
                answer = await response.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as error:
        log.debug("the upstream could not list its models: %r", error)
        return None
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list):
        return None
    return [entry["id"] for entry in data if isinstance(entry, dict) and isinstance(entry.get("id"), str)]
