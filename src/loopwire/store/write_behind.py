"""Write-behind in front of a durable store: put() returns at once, a background task makes records durable.

Owns the pending (not yet durable) records and the writer task; it must never drop a record silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .base import Store, StoredResponse, StoreUnavailable

log = logging.getLogger(__name__)


@runtime_checkable
class SupportsPutMany(Protocol):
    async def put_many(self, records: Iterable[StoredResponse]) -> None: ...


@runtime_checkable
class SupportsLineage(Protocol):
    async def lineage(self, response_id: str, owner: str) -> list[StoredResponse] | None: ...


@dataclass(frozen=True, slots=True)
class _Pending:
    """One not-yet-durable state of a record. Immutable: a change (re-put, delete) replaces the entry, so
    the writer can tell whether what it just wrote is still the latest state (identity check)."""

    record: StoredResponse
    seq: int
    deleted: bool = False


class WriteBehindStore:
    """Answers put() from memory and persists in the background, in batches, in put order.

    Reads see pending records first, so a continuation arriving before the durable write finishes still
    resolves. A record leaves `pending` only after the inner store accepted it (and, if it was deleted while
    pending, accepted the delete too). Failed writes are logged and retried with exponential backoff capped
    at `retry_max_delay`, forever; flush() waits for them and aclose() reports, loudly, what it could not
    persist within `close_timeout`.

    Backpressure: with `max_pending` records waiting, put() waits for the writer to make room, or raises
    StoreUnavailable at once while the inner store is failing (the caller answers 503 instead of hanging).

    For write-through, use the inner store directly.
    """

    def __init__(
        self,
        inner: Store,
        *,
        max_batch: int = 256,
        max_pending: int = 10_000,
        retry_initial_delay: float = 0.05,
        retry_max_delay: float = 2.0,
        close_timeout: float = 10.0,
    ) -> None:
        if max_batch < 1 or max_pending < 1:
            raise ValueError("max_batch and max_pending must be >= 1")
        self.inner = inner
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.retry_initial_delay = retry_initial_delay
        self.retry_max_delay = retry_max_delay
        self.close_timeout = close_timeout
        self._pending: dict[str, _Pending] = {}
        self._seq = itertools.count(1)
        self._last_seq = 0
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._failing: BaseException | None = None
        self._closed = False

    @property
    def pending_count(self) -> int:
        """Records accepted by put()/delete() that are not yet durable."""
        return len(self._pending)

    @property
    def failing(self) -> BaseException | None:
        """The error of the last durable write when it failed, else None."""
        return self._failing

    # -- writes ------------------------------------------------------------------------------------------

    def _enqueue(self, record: StoredResponse, deleted: bool = False) -> None:
        self._last_seq = next(self._seq)
        self._pending[record.id] = _Pending(record, self._last_seq, deleted)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._run(), name="loopwire-write-behind")
        self._wake.set()

    async def put(self, record: StoredResponse) -> None:
        if self._closed:
            raise StoreUnavailable("write-behind store is closed")
        while len(self._pending) >= self.max_pending and record.id not in self._pending:
            if self._failing is not None:
                raise StoreUnavailable(
                    f"{len(self._pending)} responses are waiting for a failing store: {self._failing}"
                )
            await self._wait_progress()
            if self._closed:
                raise StoreUnavailable("write-behind store is closed")
        self._enqueue(record)

    async def delete(self, response_id: str, owner: str) -> bool:
        if self._closed:
            raise StoreUnavailable("write-behind store is closed")
        entry = self._pending.get(response_id)
        if entry is None:
            return await self.inner.delete(response_id, owner)
        if entry.deleted or entry.record.owner != owner:
            return False
        # Still pending (maybe mid-write): a new deleted entry makes the writer persist the record, then
        # tombstone it; the record must still be written because chains through it stay valid.
        self._enqueue(entry.record, deleted=True)
        return True

    # -- reads -------------------------------------------------------------------------------------------

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        entry = self._pending.get(response_id)
        if entry is None:
            return await self.inner.get(response_id, owner)
        if entry.deleted or entry.record.owner != owner:
            return None
        return entry.record

    async def chain(self, response_id: str, owner: str) -> list[StoredResponse] | None:
        """Walk back through pending records, then ask the inner store for the first durable ancestor.

        The pending walk has no await in it, so a record absent from `pending` at that moment is durable
        already (records leave `pending` only after their write succeeded)."""
        newest_first: list[StoredResponse] = []
        seen: set[str] = set()
        current: str | None = response_id
        while current is not None and (entry := self._pending.get(current)) is not None:
            if entry.record.owner != owner or current in seen or (entry.deleted and not newest_first):
                return None
            seen.add(current)
            newest_first.append(entry.record)
            current = entry.record.previous_response_id
        newest_first.reverse()
        if current is None:
            return newest_first
        if not newest_first:
            return await self.inner.chain(current, owner)
        # `current` is an ancestor: it may be deleted and must still be returned.
        if isinstance(self.inner, SupportsLineage):
            older = await self.inner.lineage(current, owner)
        else:  # a plain Store cannot return a deleted head; this degrades to "chain broken"
            older = await self.inner.chain(current, owner)
        if older is None:
            return None
        return older + newest_first

    # -- the writer --------------------------------------------------------------------------------------

    def _notify_progress(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    async def _wait_progress(self) -> None:
        await self._progress.wait()

    async def _write(self, batch: list[_Pending]) -> None:
        records = [entry.record for entry in batch]
        if isinstance(self.inner, SupportsPutMany):
            await self.inner.put_many(records)
        else:
            for record in records:
                await self.inner.put(record)
        for entry in batch:
            if entry.deleted:
                await self.inner.delete(entry.record.id, entry.record.owner)

    async def _run(self) -> None:
        delay = self.retry_initial_delay
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(itertools.islice(self._pending.values(), self.max_batch))
            try:
                await self._write(batch)
            except Exception as exc:
                if self._failing is None:
                    log.error("durable write of %d responses failed; retrying: %r", len(batch), exc)
                else:
                    log.warning("durable write still failing (%d pending): %r", len(self._pending), exc)
                self._failing = exc
                self._notify_progress()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_delay)
                continue
            if self._failing is not None:
                log.warning("durable writes recovered; %d responses still pending", len(self._pending))
                self._failing = None
                delay = self.retry_initial_delay
            for entry in batch:
                if self._pending.get(entry.record.id) is entry:  # unchanged while we wrote it
                    del self._pending[entry.record.id]
            self._notify_progress()

    async def flush(self) -> None:
        """Return once everything put or deleted before this call is durable (waits out inner failures)."""
        target = self._last_seq
        while any(entry.seq <= target for entry in self._pending.values()):
            if self._writer is None or self._writer.done():
                raise StoreUnavailable("write-behind writer is not running")
            await self._wait_progress()

    async def aclose(self) -> None:
        """Flush (for at most `close_timeout` seconds), stop the writer and close the inner store.

        Raises StoreUnavailable, after logging the ids, when records could not be made durable."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(self.flush(), self.close_timeout)
        except (TimeoutError, StoreUnavailable):
            pass
        finally:
            if self._writer is not None:
                self._writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._writer
            self._notify_progress()  # wake put() callers waiting for room; they see _closed
        lost = list(self._pending)
        try:
            await self.inner.aclose()
        finally:
            if lost:
                shown = ", ".join(lost[:50]) + (", ..." if len(lost) > 50 else "")
                log.error("closing with %d responses not durable: %s", len(lost), shown)
                raise StoreUnavailable(f"{len(lost)} responses could not be made durable")
