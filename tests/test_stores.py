"""Store tests: one contract suite over every store, then each store's own guarantees.

Uses real SQLite files under tmp_path and a real redis-server (each test on its own key prefix); the only
fakes are thin subclasses that gate or fail writes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from loopwire.store.base import Store, StoredResponse, StoreUnavailable
from loopwire.store.factory import open_store
from loopwire.store.memory import MemoryStore, record_size
from loopwire.store.redis.link import open_link
from loopwire.store.redis.store import RedisStore
from loopwire.store.sqlite import SqliteStore
from loopwire.store.write_behind import WriteBehindStore

SRC = Path(__file__).resolve().parents[1] / "src"


def rec(
    rid: str,
    prev: str | None = None,
    owner: str = "alice",
    *,
    items: bytes | None = None,
    response: bytes | None = None,
) -> StoredResponse:
    return StoredResponse(
        id=rid,
        owner=owner,
        previous_response_id=prev,
        created_at=1_700_000_000,
        input_items=items if items is not None else f'[{{"text":"{rid}"}}]'.encode(),
        response=response if response is not None else f'{{"id":"{rid}"}}'.encode(),
    )


def ids(records: list[StoredResponse] | None) -> list[str] | None:
    return None if records is None else [r.id for r in records]


def redis_store(url: str, **options: int) -> RedisStore:
    """A RedisStore on a key prefix of its own, so tests sharing one redis-server never see each other."""
    return RedisStore(open_link(url), prefix=f"test-{uuid.uuid4().hex[:12]}:", **options)


STORE_KINDS = [
    "memory",
    "sqlite",
    "sqlite_inline",
    "write_behind",
    "redis",
    "redis_behind",
    "redis_cluster",
    "redis_sentinel",
]
REDIS_FIXTURES = {
    "redis": "redis_server",
    "redis_behind": "redis_server",
    "redis_cluster": "redis_cluster",
    "redis_sentinel": "redis_sentinel",
}


def make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    if kind in REDIS_FIXTURES:
        url = request.getfixturevalue(REDIS_FIXTURES[kind]).url
        return WriteBehindStore(redis_store(url)) if kind == "redis_behind" else redis_store(url)
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SqliteStore(tmp_path / "db" / "responses.db")
    if kind == "sqlite_inline":
        return SqliteStore(tmp_path / "db" / "responses.db", inline_writes=True)
    if kind == "write_behind":
        return WriteBehindStore(SqliteStore(tmp_path / "db" / "responses.db"))
    raise AssertionError(kind)


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s = make_store(request.param, tmp_path, request)
    yield s
    await s.aclose()


# -- the contract, for every store -------------------------------------------------------------------------


async def test_put_get_roundtrip(store: Store) -> None:
    record = rec("resp_1", items=b'[{"type":"message"}]', response=b'{"id":"resp_1","output":[]}')
    await store.put(record)
    assert await store.get("resp_1", "alice") == record
    assert await store.get("resp_missing", "alice") is None


async def test_owner_isolation(store: Store) -> None:
    await store.put(rec("a"))
    await store.put(rec("b", "a"))
    assert await store.get("b", "mallory") is None
    assert await store.chain("b", "mallory") is None
    assert await store.delete("b", "mallory") is False
    assert ids(await store.chain("b", "alice")) == ["a", "b"]  # untouched by mallory's attempts


async def test_delete_hides_but_ancestors_still_chain(store: Store) -> None:
    for record in (rec("a"), rec("b", "a"), rec("c", "b")):
        await store.put(record)
    assert await store.delete("b", "alice") is True
    assert await store.get("b", "alice") is None
    assert await store.delete("b", "alice") is False
    assert await store.chain("b", "alice") is None
    assert ids(await store.chain("c", "alice")) == ["a", "b", "c"]
    assert await store.delete("a", "alice") is True
    chain = await store.chain("c", "alice")
    assert chain == [rec("a"), rec("b", "a"), rec("c", "b")]


async def test_chain_order_forks_and_unknown(store: Store) -> None:
    await store.put(rec("root"))
    await store.put(rec("left", "root"))
    await store.put(rec("right", "root"))
    await store.put(rec("right2", "right"))
    assert ids(await store.chain("root", "alice")) == ["root"]
    assert ids(await store.chain("left", "alice")) == ["root", "left"]
    assert ids(await store.chain("right2", "alice")) == ["root", "right", "right2"]
    assert await store.chain("nope", "alice") is None


async def test_chain_with_missing_or_foreign_link_is_none(store: Store) -> None:
    await store.put(rec("orphan", "ghost"))
    assert await store.get("orphan", "alice") is not None
    assert await store.chain("orphan", "alice") is None
    await store.put(rec("bobs", None, owner="bob"))
    await store.put(rec("mine", "bobs"))
    assert await store.chain("mine", "alice") is None


async def test_chain_cycle_is_none(store: Store) -> None:
    await store.put(rec("x", "y"))
    await store.put(rec("y", "x"))
    await store.put(rec("head", "x"))
    assert await store.chain("head", "alice") is None
    assert await store.chain("x", "alice") is None


async def test_put_same_id_replaces(store: Store) -> None:
    await store.put(rec("a", response=b'{"v":1}'))
    await store.put(rec("a", response=b'{"v":2}'))
    got = await store.get("a", "alice")
    assert got is not None and got.response == b'{"v":2}'
    assert await store.delete("a", "alice") is True
    await store.put(rec("a", response=b'{"v":3}'))  # a put is a whole new record: visible again
    got = await store.get("a", "alice")
    assert got is not None and got.response == b'{"v":3}'


async def test_concurrent_puts_all_land(store: Store) -> None:
    records = [rec(f"r{i}", f"r{i - 1}" if i else None) for i in range(50)]
    await asyncio.gather(*(store.put(r) for r in records))
    assert ids(await store.chain("r49", "alice")) == [f"r{i}" for i in range(50)]


@pytest.mark.parametrize("kind", STORE_KINDS)
async def test_closed_store_raises_unavailable(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    s = make_store(kind, tmp_path, request)
    await s.put(rec("a"))
    await s.aclose()
    await s.aclose()  # idempotent
    with pytest.raises(StoreUnavailable):
        await s.put(rec("b"))
    with pytest.raises(StoreUnavailable):
        await s.get("a", "alice")


# -- MemoryStore bounds ------------------------------------------------------------------------------------


async def test_memory_count_bound_evicts_least_recently_used() -> None:
    s = MemoryStore(max_responses=3)
    for rid in ("r0", "r1", "r2"):
        await s.put(rec(rid))
    assert len(s) == 3
    assert all([await s.get(rid, "alice") for rid in ("r0", "r1", "r2")])  # exactly max kept
    assert await s.get("r0", "alice") is not None  # r0 is now the most recently used; r1 the least
    await s.put(rec("r3"))
    assert len(s) == 3
    assert await s.get("r1", "alice") is None
    assert {r for r in ("r0", "r2", "r3") if await s.get(r, "alice")} == {"r0", "r2", "r3"}


async def test_memory_byte_bound_at_the_edge() -> None:
    size = record_size(rec("r0"))
    s = MemoryStore(max_bytes=3 * size)
    for rid in ("r0", "r1", "r2"):
        await s.put(rec(rid))
    assert len(s) == 3 and s.total_bytes == 3 * size  # exactly at the budget: nothing evicted
    await s.put(rec("r3"))
    assert len(s) == 3 and s.total_bytes == 3 * size
    assert await s.get("r0", "alice") is None
    # replacing with a bigger payload is charged the difference and evicts as needed
    await s.put(rec("r3", items=b"x" * (size + 1)))
    assert s.total_bytes <= 3 * size
    assert await s.get("r1", "alice") is None
    assert await s.get("r3", "alice") is not None


async def test_memory_oversized_record_refused_without_evicting() -> None:
    s = MemoryStore(max_bytes=100)
    await s.put(rec("small"))
    with pytest.raises(StoreUnavailable):
        await s.put(rec("huge", items=b"x" * 200))
    assert await s.get("small", "alice") is not None


async def test_memory_chain_through_evicted_ancestor_is_none() -> None:
    s = MemoryStore(max_responses=2)
    await s.put(rec("a"))
    await s.put(rec("b", "a"))
    await s.put(rec("c", "b"))  # evicts a
    assert await s.get("c", "alice") is not None
    assert await s.chain("c", "alice") is None


async def test_memory_chain_keeps_history_warm() -> None:
    s = MemoryStore(max_responses=3)
    await s.put(rec("a"))
    await s.put(rec("b", "a"))
    await s.put(rec("other"))
    assert ids(await s.chain("b", "alice")) == ["a", "b"]
    await s.put(rec("c", "b"))  # evicts "other", not the conversation's root
    assert ids(await s.chain("c", "alice")) == ["a", "b", "c"]


def test_memory_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError):
        MemoryStore(max_responses=0)
    with pytest.raises(ValueError):
        MemoryStore(max_bytes=0)


# -- SqliteStore -------------------------------------------------------------------------------------------


async def test_sqlite_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "r.db"
    first = SqliteStore(path)
    await first.put(rec("a"))
    await first.put_many([rec("b", "a"), rec("c", "b")])
    assert await first.delete("b", "alice")
    await first.aclose()

    second = SqliteStore(path)
    try:
        assert ids(await second.chain("c", "alice")) == ["a", "b", "c"]
        assert await second.get("b", "alice") is None  # the tombstone persisted too
        assert await second.get("a", "alice") == rec("a")
    finally:
        await second.aclose()


async def test_sqlite_sees_writes_from_another_process(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    reader = SqliteStore(path)  # open before the other process writes: WAL readers see later commits
    await reader.put(rec("local"))
    script = textwrap.dedent(
        f"""
        import asyncio
        from loopwire.store.base import StoredResponse
        from loopwire.store.sqlite import SqliteStore

        async def main():
            s = SqliteStore({str(path)!r})
            await s.put(StoredResponse("p1", "alice", "local", 1, b"[1]", b"{{}}"))
            await s.put_many([StoredResponse("p2", "alice", "p1", 2, b"[2]", b"{{}}")])
            await s.aclose()

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, env=env)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    try:
        assert ids(await reader.chain("p2", "alice")) == ["local", "p1", "p2"]
    finally:
        await reader.aclose()
    fresh = SqliteStore(path)
    try:
        got = await fresh.get("p2", "alice")
        assert got == StoredResponse("p2", "alice", "p1", 2, b"[2]", b"{}")
    finally:
        await fresh.aclose()


async def test_sqlite_file_settings(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    s = SqliteStore(path)
    await s.put(rec("a"))
    await s.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = {row[1] for row in conn.execute("PRAGMA table_info(responses)")}
    expected = {"id", "owner", "previous_response_id", "created_at", "input_items", "response", "deleted"}
    assert columns == expected


async def test_sqlite_put_many_is_one_transaction(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "r.db")
    try:
        bad = StoredResponse("bad", None, None, 1, b"[]", b"{}")  # type: ignore[arg-type]  # NOT NULL owner
        with pytest.raises(StoreUnavailable):
            await s.put_many([rec("ok1"), bad, rec("ok2")])
        assert await s.get("ok1", "alice") is None
        await s.put_many([])
        await s.put_many([rec("ok1"), rec("ok2")])  # the connection is still usable
        assert await s.get("ok2", "alice") is not None
    finally:
        await s.aclose()


async def test_sqlite_errors_become_store_unavailable(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path)  # a directory cannot be opened as a database
    try:
        with pytest.raises(StoreUnavailable):
            await s.put(rec("a"))
        with pytest.raises(StoreUnavailable):
            await s.chain("a", "alice")
    finally:
        await s.aclose()


async def test_sqlite_does_not_block_the_event_loop(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "r.db")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        await s.put_many([rec(f"r{i}", items=b"x" * 6000) for i in range(300)])
    finally:
        task.cancel()
        await s.aclose()
    assert ticks > 1  # the loop kept running while the batch was written on the worker thread


# -- WriteBehindStore --------------------------------------------------------------------------------------


class GatedSqliteStore(SqliteStore):
    """A real SqliteStore whose batch writes wait for a gate, so a test can act while a write is pending."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def put_many(self, records: Iterable[StoredResponse]) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().put_many(records)


class FlakySqliteStore(SqliteStore):
    """A real SqliteStore whose batch writes fail the first `failures` times."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures
        self.attempts = 0
        self.failed = asyncio.Event()

    async def put_many(self, records: Iterable[StoredResponse]) -> None:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            self.failed.set()
            raise StoreUnavailable("disk unplugged (simulated)")
        await super().put_many(records)


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[tuple[WriteBehindStore, GatedSqliteStore]]:
    inner = GatedSqliteStore(tmp_path / "wb.db")
    wb = WriteBehindStore(inner)
    yield wb, inner
    inner.gate.set()
    await wb.aclose()


async def flush(wb: WriteBehindStore) -> None:
    await asyncio.wait_for(wb.flush(), 5)


async def test_wb_get_before_durable(gated: tuple[WriteBehindStore, GatedSqliteStore]) -> None:
    wb, inner = gated
    await wb.put(rec("a"))
    assert await wb.get("a", "alice") == rec("a")
    assert await wb.get("a", "mallory") is None
    assert ids(await wb.chain("a", "alice")) == ["a"]
    assert await inner.get("a", "alice") is None  # not durable yet
    assert wb.pending_count == 1
    inner.gate.set()
    await flush(wb)
    assert wb.pending_count == 0
    assert await inner.get("a", "alice") == rec("a")


async def test_wb_chain_spans_pending_and_durable(gated: tuple[WriteBehindStore, GatedSqliteStore]) -> None:
    wb, inner = gated
    inner.gate.set()
    await wb.put(rec("a"))
    await wb.put(rec("b", "a"))
    await flush(wb)
    assert await wb.delete("b", "alice")  # durable delete of the first durable ancestor
    inner.gate.clear()
    await wb.put(rec("c", "b"))
    await wb.put(rec("d", "c"))
    assert await inner.chain("d", "alice") is None
    assert ids(await wb.chain("d", "alice")) == ["a", "b", "c", "d"]
    assert await wb.chain("d", "mallory") is None
    await wb.put(rec("e", "ghost"))  # a pending record whose durable ancestor is missing
    assert await wb.chain("e", "alice") is None
    inner.gate.set()
    await flush(wb)
    assert ids(await inner.chain("d", "alice")) == ["a", "b", "c", "d"]


async def test_wb_delete_of_pending_record_is_durable(
    gated: tuple[WriteBehindStore, GatedSqliteStore],
) -> None:
    wb, inner = gated
    await wb.put(rec("a"))
    await wb.put(rec("b", "a"))
    assert await wb.delete("a", "mallory") is False
    assert await wb.delete("a", "alice") is True
    assert await wb.delete("a", "alice") is False
    assert await wb.get("a", "alice") is None
    assert await wb.chain("a", "alice") is None
    assert ids(await wb.chain("b", "alice")) == ["a", "b"]  # deleted pending ancestor still chains
    inner.gate.set()
    await flush(wb)
    assert wb.pending_count == 0
    assert await inner.get("a", "alice") is None
    assert ids(await inner.chain("b", "alice")) == ["a", "b"]


async def test_wb_delete_while_write_in_flight(gated: tuple[WriteBehindStore, GatedSqliteStore]) -> None:
    wb, inner = gated
    await wb.put(rec("a"))
    await asyncio.wait_for(inner.entered.wait(), 5)  # the writer holds "a" mid-write
    assert await wb.delete("a", "alice") is True
    inner.gate.set()
    await flush(wb)
    assert await inner.get("a", "alice") is None
    assert ids(await inner.lineage("a", "alice")) == ["a"]


async def test_wb_replace_while_write_in_flight(gated: tuple[WriteBehindStore, GatedSqliteStore]) -> None:
    wb, inner = gated
    await wb.put(rec("a", response=b'{"v":1}'))
    await asyncio.wait_for(inner.entered.wait(), 5)
    await wb.put(rec("a", response=b'{"v":2}'))
    inner.gate.set()
    await flush(wb)
    got = await inner.get("a", "alice")
    assert got is not None and got.response == b'{"v":2}'


async def test_wb_inner_failure_keeps_pending_then_lands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inner = FlakySqliteStore(tmp_path / "flaky.db", failures=3)
    wb = WriteBehindStore(inner, retry_initial_delay=0.001, retry_max_delay=0.01)
    caplog.set_level(logging.WARNING, logger="loopwire.store.write_behind")
    try:
        await wb.put(rec("a"))
        await wb.put(rec("b", "a"))
        assert ids(await wb.chain("b", "alice")) == ["a", "b"]
        await flush(wb)
        assert inner.attempts >= 4 and inner.failures == 0
        assert wb.failing is None and wb.pending_count == 0
        assert ids(await inner.chain("b", "alice")) == ["a", "b"]
        assert any("failed" in r.getMessage() for r in caplog.records)
        assert any("recovered" in r.getMessage() for r in caplog.records)
    finally:
        await wb.aclose()


async def test_wb_backpressure_while_failing(tmp_path: Path) -> None:
    inner = FlakySqliteStore(tmp_path / "down.db", failures=10**9)
    wb = WriteBehindStore(inner, max_pending=2, retry_initial_delay=0.001, retry_max_delay=0.005)
    try:
        await wb.put(rec("a"))
        await wb.put(rec("b"))
        await asyncio.wait_for(inner.failed.wait(), 5)
        await asyncio.sleep(0)  # let the writer record the failure
        assert wb.failing is not None
        with pytest.raises(StoreUnavailable):
            await wb.put(rec("c"))
        await wb.put(rec("a", response=b'{"v":2}'))  # replacing a pending record needs no room
        inner.failures = 0  # the disk is back
        await flush(wb)
        got = await inner.get("a", "alice")
        assert got is not None and got.response == b'{"v":2}'
        await wb.put(rec("c"))
    finally:
        await wb.aclose()


async def test_wb_backpressure_waits_for_room(tmp_path: Path) -> None:
    inner = GatedSqliteStore(tmp_path / "slow.db")
    wb = WriteBehindStore(inner, max_pending=1)
    try:
        await wb.put(rec("a"))
        waiting = asyncio.create_task(wb.put(rec("b")))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        inner.gate.set()
        await asyncio.wait_for(waiting, 5)
        await flush(wb)
        assert await inner.get("b", "alice") is not None
    finally:
        inner.gate.set()
        await wb.aclose()


async def test_wb_aclose_flushes_to_disk(tmp_path: Path) -> None:
    path = tmp_path / "close.db"
    wb = WriteBehindStore(SqliteStore(path))
    await wb.put(rec("a"))
    await wb.put(rec("b", "a"))
    assert await wb.delete("b", "alice")
    await wb.aclose()
    reopened = SqliteStore(path)
    try:
        assert ids(await reopened.chain("a", "alice")) == ["a"]
        assert await reopened.get("b", "alice") is None
        assert ids(await reopened.lineage("b", "alice")) == ["a", "b"]
    finally:
        await reopened.aclose()


async def test_wb_aclose_reports_what_it_could_not_persist(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inner = FlakySqliteStore(tmp_path / "dead.db", failures=10**9)
    wb = WriteBehindStore(inner, retry_initial_delay=0.001, close_timeout=0.05)
    await wb.put(rec("lost_1"))
    with pytest.raises(StoreUnavailable, match="1 responses"):
        await wb.aclose()
    assert any("lost_1" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


class PlainStore:
    """Only the Store protocol (no put_many, no lineage), delegating to a MemoryStore."""

    def __init__(self) -> None:
        self.backing = MemoryStore()

    async def put(self, record: StoredResponse) -> None:
        await self.backing.put(record)

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        return await self.backing.get(response_id, owner)

    async def chain(self, response_id: str, owner: str) -> list[StoredResponse] | None:
        return await self.backing.chain(response_id, owner)

    async def delete(self, response_id: str, owner: str) -> bool:
        return await self.backing.delete(response_id, owner)

    async def aclose(self) -> None:
        await self.backing.aclose()


async def test_wb_over_a_plain_store() -> None:
    inner = PlainStore()
    wb = WriteBehindStore(inner)
    try:
        await wb.put(rec("a"))
        await wb.put(rec("b", "a"))
        await flush(wb)
        await wb.put(rec("c", "b"))
        assert ids(await wb.chain("c", "alice")) == ["a", "b", "c"]
        assert await wb.delete("c", "alice")
        await flush(wb)
        assert await inner.get("c", "alice") is None
        assert ids(await inner.backing.lineage("c", "alice")) == ["a", "b", "c"]
    finally:
        await wb.aclose()


# -- open_store --------------------------------------------------------------------------------------------


async def test_open_store_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    memory = open_store("memory")
    assert isinstance(memory, MemoryStore)
    await memory.aclose()

    wb = open_store("sqlite:.loopwire/responses.db", write="behind")
    assert isinstance(wb, WriteBehindStore) and isinstance(wb.inner, SqliteStore)
    assert wb.inner.path == tmp_path / ".loopwire" / "responses.db"
    await wb.put(rec("a"))
    await wb.aclose()
    assert (tmp_path / ".loopwire" / "responses.db").exists()

    direct = open_store(f"sqlite:{tmp_path / 'abs.db'}", write="through")
    assert isinstance(direct, SqliteStore) and not direct.inline_writes
    await direct.aclose()

    inline = open_store(f"sqlite:{tmp_path / 'inline.db'}")
    assert isinstance(inline, SqliteStore) and inline.inline_writes
    await inline.aclose()
    with pytest.raises(ValueError):
        open_store("memory", write="sometimes")


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "redis://",
        "redis://h:port",
        "redis://h/x",
        "redis+sentinel://h:1",
        "redis+cluster://h/1",
        "sqlite",
        "sqlite:",
        "sqlite:  ",
        "memory:big",
        "mem",
    ],
)
def test_open_store_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError):
        open_store(spec)


def test_open_store_rejects_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="directory"):
        open_store(f"sqlite:{tmp_path}")


async def test_inline_writes_are_committed_before_put_returns(tmp_path: Path) -> None:
    path = tmp_path / "inline.db"
    store = SqliteStore(path, inline_writes=True)
    count = SqliteStore.CHECKPOINT_EVERY + 3  # past one worker checkpoint
    for index in range(count):
        await store.put(rec(f"i{index}"))
        if index == 0:
            # Another connection (as another process would) sees the row as soon as put() returned.
            other = SqliteStore(path)
            assert await other.get("i0", "alice") is not None
            await other.aclose()
    await store.aclose()
    reopened = SqliteStore(path)
    assert all([await reopened.get(f"i{index}", "alice") for index in range(count)])
    await reopened.aclose()


async def test_inline_writes_keep_the_wal_bounded(tmp_path: Path) -> None:
    """Back-to-back inline puts must let the WAL restart: it stays a few MB, not the size of all writes."""
    path = tmp_path / "wal.db"
    store = SqliteStore(path, inline_writes=True)
    payload = b"x" * 4096
    largest = 0
    for index in range(4000):  # ~32 MB of pages written in all
        await store.put(rec(f"w{index}", items=payload))
        if index % 500 == 0:
            # A read, as a live server's continuations make: it runs on the worker after the checkpoints
            # queued before it, so a loaded machine cannot starve them out of the measurement.
            assert await store.get(f"w{index}", "alice") is not None
            wal = path.with_name(path.name + "-wal")
            largest = max(largest, wal.stat().st_size if wal.exists() else 0)
    await store.aclose()
    assert largest < 16 * 1024 * 1024, largest
