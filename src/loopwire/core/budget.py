"""The global memory budget for connection caches: least recently used idle lanes are evicted first.

Sans-I/O and cross-connection: it tracks each lane's latest cached response and its approximate size,
and tells the caller which to evict; it never touches a socket or a store.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .cache import CachedResponse
from .connection import ConnectionState

_Key = tuple[int, str]


class CacheBudget:
    """`max_bytes` over all open connections. An evicted lane's next continuation resolves from the store
    (store=true) or gets previous_response_not_found, as after a reconnect. A lane with a running turn is
    never evicted. It is the `CacheAccount` of the connections it counts: they tell it of every response
    leaving their cache (`discard`), so `total` is exact at all times, not only after a sweep."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.total = 0
        self._entries: OrderedDict[_Key, tuple[ConnectionState[Any], CachedResponse]] = OrderedDict()

    def record(self, conn: ConnectionState[Any], cached: CachedResponse) -> list[CachedResponse]:
        """`cached` is now its lane's latest; returns the responses evicted to stay within budget."""
        key = (id(conn), cached.lane)
        previous = self._entries.pop(key, None)
        if previous is not None:
            self.total -= previous[1].size
        self._entries[key] = (conn, cached)
        self.total += cached.size
        evicted: list[CachedResponse] = []
        if self.total <= self.max_bytes:
            return evicted
        for other_key, (other_conn, other) in list(self._entries.items()):
            if self.total <= self.max_bytes:
                break
            if other_key == key or other_conn.is_running(other.lane):
                continue
            other_conn.evict(other.id)
            self.discard(other_conn, other)  # done already when the connection reports to this budget
            evicted.append(other)
        return evicted

    def discard(self, conn: ConnectionState[Any], cached: CachedResponse) -> None:
        """`cached` left its connection's cache: it no longer counts (a no-op when it is not the lane's
        counted response)."""
        key = (id(conn), cached.lane)
        entry = self._entries.get(key)
        if entry is not None and entry[1] is cached:
            del self._entries[key]
            self.total -= cached.size

    def __len__(self) -> int:
        return len(self._entries)
