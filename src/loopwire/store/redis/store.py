"""The Store on Redis: put, get and delete are one script call (one round trip) each, a chain of any length
is two (a server-side walk of the links, then one MGET of the payloads).

Owns the key naming and the mapping between records and script replies; the breaker, timeouts and client
live in link.py, the scripts (and the data layout) in scripts.py. It must not cache records: another node
may delete or add one at any moment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from ..base import StoredResponse
from . import scripts
from .link import LuaScript, RedisLink

DEFAULT_TTL_S = 30 * 24 * 3600
"""Like the hosted API, a stored response can be retrieved for 30 days after it was created."""
MAX_CHAIN = 100_000
"""Links a chain walk follows before it gives up (a guard; real chains are far shorter)."""
KEY_PREFIX = "loopwire:"


def owner_tag(owner: str) -> str:
    """The Cluster hash tag of an owner's keys: a digest, so any owner string is safe inside `{...}`."""
    return hashlib.blake2b(owner.encode(), digest_size=8).hexdigest()


def expiry_granularity(ttl_s: int) -> int:
    """Expiry times are rounded up to this, so a busy conversation extends its ancestors' lives once per
    window (an hour for the 30-day default), not on every turn."""
    return max(1, min(3600, ttl_s // 100))


class RedisStore:
    """Stored responses in Redis, shared by every node that points at the same Redis.

    Same semantics as SqliteStore (owner isolation, deletes that hide a record but keep it for the chains
    through it, None for a broken or cyclic chain) plus a retention time: a record is visible for `ttl_s`
    after it was put (0: forever), not refreshed by reads, as the hosted API keeps responses; its ancestors
    are kept while it is visible, so a continuation never finds its beginning gone. Durability is Redis's
    (see docs/deployment.md: with appendfsync always a completed put survives a crash of Redis too)."""

    def __init__(self, link: RedisLink, *, ttl_s: int = DEFAULT_TTL_S, prefix: str = KEY_PREFIX) -> None:
        if ttl_s < 0:
            raise ValueError(f"the store TTL must be >= 0 seconds, got {ttl_s}")
        self.link = link
        self.ttl_s = ttl_s
        self.prefix = prefix
        self._granularity = expiry_granularity(ttl_s)

    @property
    def available(self) -> bool:
        """False while Redis is known to be unreachable: a store=true turn is refused before it runs."""
        return self.link.available

    @property
    def round_trips(self) -> int:
        return self.link.round_trips

    def _records_prefix(self, owner: str) -> str:
        return f"{self.prefix}{{{owner_tag(owner)}}}:r:"

    def _payloads_prefix(self, owner: str) -> str:
        return f"{self.prefix}{{{owner_tag(owner)}}}:b:"

    def _put_call(self, record: StoredResponse) -> tuple[LuaScript, list[str], list[str | bytes | int]]:
        records = self._records_prefix(record.owner)
        payloads = self._payloads_prefix(record.owner)
        args: list[str | bytes | int] = [
            records,
            record.owner,
            record.previous_response_id or "",
            record.created_at,
            b"%d:%b%b" % (len(record.input_items), record.input_items, record.response),
            self.ttl_s,
            self._granularity,
            MAX_CHAIN,
            payloads,
        ]
        return scripts.PUT, [records + record.id, payloads + record.id], args

    async def put(self, record: StoredResponse) -> None:
        await self.link.script(*self._put_call(record))

    async def put_many(self, records: Iterable[StoredResponse]) -> None:
        """One pipelined round trip; all or nothing on a single Redis (MULTI)."""
        calls = [self._put_call(record) for record in records]
        if calls:
            await self.link.scripts(calls)

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        keys = [self._records_prefix(owner) + response_id, self._payloads_prefix(owner) + response_id]
        reply = await self.link.script(scripts.GET, keys, [owner])
        if reply is None:
            return None
        previous, created, payload = reply
        return _record(response_id, owner, previous, created, payload)

    async def chain(self, response_id: str, owner: str) -> list[StoredResponse] | None:
        return await self._walk(response_id, owner, head_visible=True)

    async def lineage(self, response_id: str, owner: str) -> list[StoredResponse] | None:
        """Like chain(), but the head itself may be deleted (WriteBehindStore needs this for an ancestor)."""
        return await self._walk(response_id, owner, head_visible=False)

    async def _walk(self, response_id: str, owner: str, *, head_visible: bool) -> list[StoredResponse] | None:
        prefix = self._records_prefix(owner)
        args: list[str | bytes | int] = [prefix, owner, response_id, "1" if head_visible else "0", MAX_CHAIN]
        links = await self.link.script(scripts.CHAIN, [prefix + response_id], args)
        if links is None:
            return None
        payloads = self._payloads_prefix(owner)
        blobs = await self.link.mget([payloads + _text(links[i]) for i in range(0, len(links), 3)])
        records: list[StoredResponse] = []
        for index, payload in enumerate(blobs):
            if payload is None:  # expired or deleted between the walk and the read: no partial context
                return None
            rid, previous, created = links[3 * index : 3 * index + 3]
            records.append(_record(rid, owner, previous, created, payload))
        records.reverse()
        return records

    async def delete(self, response_id: str, owner: str) -> bool:
        prefix = self._records_prefix(owner)
        return bool(await self.link.script(scripts.DELETE, [prefix + response_id], [owner]))

    async def aclose(self) -> None:
        await self.link.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _record(
    response_id: bytes | str, owner: str, previous: bytes | str, created: bytes | str, payload: bytes
) -> StoredResponse:
    colon = payload.index(b":")
    end = colon + 1 + int(payload[:colon])
    return StoredResponse(
        id=_text(response_id),
        owner=owner,
        previous_response_id=_text(previous) or None,
        created_at=int(created),
        input_items=payload[colon + 1 : end],
        response=payload[end:],
    )
