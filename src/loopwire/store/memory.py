"""A bounded in-process store: LRU eviction by record count and by total bytes, tombstones for deletes.

Owns records only while the process lives; it must not persist anything or grow past its bounds.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from .base import StoredResponse, StoreUnavailable

DEFAULT_MAX_RESPONSES = 10_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


def record_size(record: StoredResponse) -> int:
    """The bytes a record is charged against a byte budget: its two payloads."""
    return len(record.input_items) + len(record.response)


@dataclass(slots=True)
class _Slot:
    record: StoredResponse
    deleted: bool = False


class MemoryStore:
    """Keeps at most `max_responses` records and `max_bytes` of payload, evicting the least recently used.

    A record is "used" when it is put, returned by get(), or returned by chain() (every record of the chain,
    so a live conversation keeps its whole history warm). Tombstoned (deleted) records still occupy space:
    chains built on them need them.

    An evicted ancestor breaks every chain through it: chain() then returns None rather than a partial
    context, because a conversation silently missing its beginning is worse than a clean "not found".
    A single record larger than `max_bytes` is refused with StoreUnavailable and nothing is evicted for it.
    """

    def __init__(
        self, max_responses: int = DEFAULT_MAX_RESPONSES, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if max_responses < 1:
            raise ValueError(f"max_responses must be >= 1, got {max_responses}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.max_responses = max_responses
        self.max_bytes = max_bytes
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._bytes = 0
        self._closed = False

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("memory store is closed")

    def _insert(self, record: StoredResponse) -> None:
        size = record_size(record)
        if size > self.max_bytes:
            raise StoreUnavailable(
                f"response {record.id} is {size} bytes, larger than the store's {self.max_bytes}-byte budget"
            )
        old = self._slots.pop(record.id, None)
        if old is not None:
            self._bytes -= record_size(old.record)
        self._slots[record.id] = _Slot(record)
        self._bytes += size
        while len(self._slots) > self.max_responses or self._bytes > self.max_bytes:
            _, evicted = self._slots.popitem(last=False)
            self._bytes -= record_size(evicted.record)

    def _visible(self, response_id: str, owner: str) -> _Slot | None:
        slot = self._slots.get(response_id)
        if slot is None or slot.deleted or slot.record.owner != owner:
            return None
        return slot

    async def put(self, record: StoredResponse) -> None:
        self._check_open()
        self._insert(record)

    async def put_many(self, records: Iterable[StoredResponse]) -> None:
        self._check_open()
        for record in records:
            self._insert(record)

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        self._check_open()
        slot = self._visible(response_id, owner)
        if slot is None:
            return None
        self._slots.move_to_end(response_id)
        return slot.record

    async def chain(self, response_id: str, owner: str) -> list[StoredResponse] | None:
        self._check_open()
        if self._visible(response_id, owner) is None:
            return None
        return self._walk(response_id, owner)

    async def lineage(self, response_id: str, owner: str) -> list[StoredResponse] | None:
        """Like chain(), but the head itself may be deleted (WriteBehindStore needs this for an ancestor)."""
        self._check_open()
        return self._walk(response_id, owner)

    def _walk(self, response_id: str, owner: str) -> list[StoredResponse] | None:
        records: list[StoredResponse] = []
        seen: set[str] = set()
        current: str | None = response_id
        while current is not None:
            slot = self._slots.get(current)
            if slot is None or slot.record.owner != owner or current in seen:
                return None  # evicted/missing link, a foreign record, or a cycle: no partial context
            seen.add(current)
            records.append(slot.record)
            current = slot.record.previous_response_id
        records.reverse()
        for record in records:  # oldest first, so the head ends up most recently used
            self._slots.move_to_end(record.id)
        return records

    async def delete(self, response_id: str, owner: str) -> bool:
        self._check_open()
        slot = self._visible(response_id, owner)
        if slot is None:
            return False
        slot.deleted = True
        return True

    async def aclose(self) -> None:
        self._closed = True
        self._slots.clear()
        self._bytes = 0
