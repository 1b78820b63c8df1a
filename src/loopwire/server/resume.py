"""Reconnect grace: the lane caches of a WebSocket that dropped uncleanly, parked for `grace_s` under a
single-use token the client was given, so that a new socket to this node presenting it gets them back and
continues by id (store=false lanes included) instead of replaying its history.

A client asks for a token with the `x-loopwire-resume` upgrade header (or `?resume_token=` on the URL):
`new` for a first connection, else the token it holds. Right after the upgrade it gets one
`loopwire.resume_token` event: a fresh token for this connection (its node id, a dot, 32 random bytes),
the grace time, and whether lanes were resumed. A token is bound to the owner digest of the key it was
issued to and is used up by its first claim; an unknown, expired, used or other key's token is a plain
new connection. Parked caches stay in the cache budget (which may evict them like any idle lane) until
claimed or expired. Owns tokens, parked connections and their expiry; must not read frames or hold
protocol rules.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import msgspec

from ..core.connection import ConnectionState

RESUME_EVENT = "loopwire.resume_token"
RESUME_HEADER = b"x-loopwire-resume"
RESUME_QUERY = "resume_token"
NEW = "new"
MAX_PARKED = 4096
"""Most connections parked at once; past it the oldest is let go early (the budget bounds their bytes)."""
MAX_TOKEN_CHARS = 128


@dataclass(slots=True)
class _Parked:
    conn: ConnectionState[Any]
    timer: asyncio.TimerHandle


def requested_resume(scope: Mapping[str, Any]) -> str | None:
    """What the upgrade asked for: None (no resumption), NEW, or a token."""
    value: str | None = None
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", ())
    for name, raw in headers:
        if name.lower() == RESUME_HEADER:
            value = raw.decode("latin-1").strip()
    if value is None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        values = query.get(RESUME_QUERY)
        value = values[-1].strip() if values else None
    if value is not None and not 0 < len(value) <= MAX_TOKEN_CHARS:
        return NEW  # malformed: treated like an unknown token
    return value


class ResumeRegistry:
    """The node's parked connections. `grace_s` 0 turns reconnect grace off (no tokens are issued)."""

    def __init__(self, node_id: str, grace_s: float) -> None:
        self.node_id = node_id
        self.grace_s = grace_s
        self._parked: OrderedDict[str, _Parked] = OrderedDict()
        self.resumed = 0
        self.expired = 0

    @property
    def enabled(self) -> bool:
        return self.grace_s > 0

    def issue(self) -> str:
        return f"{self.node_id}.{secrets.token_urlsafe(32)}"

    def event(self, token: str, resumed: ConnectionState[Any] | None) -> str:
        return msgspec.json.encode(
            {
                "type": RESUME_EVENT,
                "token": token,
                "resume_grace_s": self.grace_s,
                "resumed": resumed is not None,
                "lanes": resumed.cached_count if resumed is not None else 0,
            }
        ).decode()

    def park(self, token: str, conn: ConnectionState[Any]) -> None:
        """Keep `conn`'s caches for `grace_s` under `token` (nothing to keep: they are let go at once)."""
        if not self.enabled or conn.cached_count == 0:
            conn.clear()
            return
        while len(self._parked) >= MAX_PARKED:
            _, oldest = self._parked.popitem(last=False)
            self._let_go(oldest)
        timer = asyncio.get_running_loop().call_later(self.grace_s, self._expire, token)
        self._parked[token] = _Parked(conn, timer)

    def claim(self, token: str, owner: str) -> ConnectionState[Any] | None:
        """The parked connection `token` names, once, for the owner it was issued to; else None."""
        parked = self._parked.get(token)
        if parked is None or not hmac.compare_digest(parked.conn.owner.encode(), owner.encode()):
            return None
        del self._parked[token]
        parked.timer.cancel()
        self.resumed += 1
        return parked.conn

    @property
    def parked(self) -> int:
        return len(self._parked)

    def _expire(self, token: str) -> None:
        parked = self._parked.pop(token, None)
        if parked is not None:
            self.expired += 1
            self._let_go(parked)

    @staticmethod
    def _let_go(parked: _Parked) -> None:
        parked.timer.cancel()
        parked.conn.clear()  # its responses leave the cache budget

    def close(self) -> None:
        while self._parked:
            _, parked = self._parked.popitem()
            self._let_go(parked)
