"""The opaque token that names a lane to an upstream, so the upstream can keep the lane on one cache.

Owns turning a lane's cache key (which names its owner) into a stable token that reveals nothing; must not
decide where the token goes (a body field, a header: each gateway engine's settings say).
"""

from __future__ import annotations

from hashlib import blake2b


def affinity_token(cache_key: str) -> str:
    """The opaque, stable form of a lane's cache key that goes upstream (the raw key names the owner)."""
    return blake2b(cache_key.encode("utf-8"), digest_size=16).hexdigest()
