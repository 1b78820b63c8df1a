"""The store interface and the record it keeps for every `store: true` response.

Owns the contract only; implementations live in their own modules and never see sessions or sockets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """One finished response. `input_items` holds only the items this turn added (a JSON array); the full
    context is the chain of ancestors' inputs and outputs, so a write costs the delta, not the history."""

    id: str
    owner: str
    previous_response_id: str | None
    created_at: int
    input_items: bytes
    response: bytes


class StoreUnavailable(Exception):
    """The store cannot be reached or written; callers answer with a 503-shaped error."""


class Store(Protocol):
    async def put(self, record: StoredResponse) -> None:
        """Persist (or replace) a record. Raises StoreUnavailable on failure."""
        ...

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        """The record, or None when it is missing, deleted, or belongs to another owner."""
        ...

    async def chain(self, response_id: str, owner: str) -> list[StoredResponse] | None:
        """The records from the root of the conversation to `response_id` inclusive, oldest first.

        None when `response_id` itself is missing, deleted or another owner's. Deleted ancestors are still
        returned: deleting one response hides it, it does not break the conversations built on it."""
        ...

    async def delete(self, response_id: str, owner: str) -> bool:
        """Hide the record from get/delete; False when it was not visible to this owner."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SupportsAvailability(Protocol):
    """A store that knows, without a call, that its backend is unreachable right now."""

    @property
    def available(self) -> bool: ...
