"""Bearer API keys: who a request belongs to. Every stored response and cached lane is owned by it.

Owns parsing keys and the `Authorization` header into an owner id (a digest, never the key itself);
makes no decision about what an owner may see: stores and connection caches compare owners.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from ..protocol.errors import ProtocolError


def owner_of(token: str) -> str:
    """A stable, non-reversible id for a key, so stores never hold the key itself."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def invalid_api_key() -> ProtocolError:
    return ProtocolError(
        401,
        "Incorrect API key provided. Pass a valid key as 'Authorization: Bearer <key>'.",
        code="invalid_api_key",
    )


class ApiKeys:
    """With keys configured, only they are accepted. Without (open mode, for local use) any bearer token is
    accepted and still names its owner, so two clients with different tokens never see each other's
    responses; a request with no token at all is the anonymous owner."""

    def __init__(self, keys: Iterable[str] | None = None) -> None:
        self._owners: frozenset[str] | None = None
        if keys is not None:
            owners = frozenset(owner_of(key) for key in keys)
            if not owners:
                raise ValueError("an API key file must hold at least one key")
            self._owners = owners

    @classmethod
    def from_file(cls, path: str | Path) -> ApiKeys:
        """One key per line; blank lines and lines starting with '#' are ignored."""
        lines = Path(path).read_text().splitlines()
        return cls(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))

    @property
    def open(self) -> bool:
        return self._owners is None

    def owner_for(self, authorization: bytes | None) -> str:
        """The owner of a request from its `Authorization` header; raises the 401 error when refused."""
        token = _bearer_token(authorization)
        if self._owners is None:
            return "" if token is None else owner_of(token)
        if token is None:
            raise invalid_api_key()
        owner = owner_of(token)
        if owner not in self._owners:
            raise invalid_api_key()
        return owner


def _bearer_token(authorization: bytes | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.decode("latin-1").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def authorization_header(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            return value
    return None
