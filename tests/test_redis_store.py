"""The Redis store's own guarantees against real redis-server processes: two round trips per chain whatever
its length, retention (TTL) with whole chains, and outages (a hung Redis, a stopped one, a restart on the
same port and data) that give StoreUnavailable within a bounded time, never stall the event loop, and heal
without reopening the store; TLS (rediss://) with a verified certificate. The shared contract (same as
memory and SQLite) is in test_stores.py."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from conftest import free_port
from redis_server import RedisServer

from loopwire.store.base import StoredResponse, StoreUnavailable
from loopwire.store.factory import open_store
from loopwire.store.redis.link import RedisLink, open_link, parse_spec
from loopwire.store.redis.store import RedisStore, expiry_granularity
from loopwire.store.write_behind import WriteBehindStore


def rec(rid: str, prev: str | None = None, owner: str = "alice", size: int = 100) -> StoredResponse:
    return StoredResponse(
        rid, owner, prev, 1_700_000_000, b"[" + b"x" * size + b"]", f'{{"id":"{rid}"}}'.encode()
    )


def make(url: str, **options: int) -> RedisStore:
    return RedisStore(open_link(url), prefix=f"t-{uuid.uuid4().hex[:10]}:", **options)


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    s = make(redis_server.url)
    yield s
    await s.aclose()


async def build_chain(store: RedisStore, length: int, tag: str) -> list[str]:
    ids = [f"{tag}-{i}" for i in range(length)]
    await store.put_many([rec(rid, ids[i - 1] if i else None) for i, rid in enumerate(ids)])
    return ids


@pytest.mark.parametrize("length", [1, 10, 50, 200])
async def test_a_chain_of_any_length_is_two_round_trips(
    store: RedisStore, redis_server: RedisServer, length: int
) -> None:
    ids = await build_chain(store, length, f"c{length}")
    await store.chain(ids[-1], "alice")  # loads the scripts into Redis (EVALSHA from now on)
    await store.get("missing", "alice")
    await store.delete("missing", "alice")
    client_before = store.round_trips
    server_before = redis_server.calls("evalsha"), redis_server.calls("mget")
    chain = await store.chain(ids[-1], "alice")
    assert [r.id for r in chain or []] == ids
    assert store.round_trips - client_before == 2  # the walk, then the payloads
    server_after = redis_server.calls("evalsha"), redis_server.calls("mget")
    assert (server_after[0] - server_before[0], server_after[1] - server_before[1]) == (1, 1)  # Redis's count
    before = store.round_trips
    assert await store.get(ids[-1], "alice") is not None
    assert await store.delete(ids[0], "alice") is True
    assert store.round_trips - before == 2


async def test_put_many_is_one_round_trip_and_survives_a_script_flush(
    store: RedisStore, redis_server: RedisServer
) -> None:
    before = store.round_trips
    await build_chain(store, 30, "batch")
    assert store.round_trips - before == 1
    assert redis_server.command("SCRIPT", "FLUSH") == b"+OK\r\n"  # as after a Redis restart
    before = store.round_trips
    assert [r.id for r in await store.chain("batch-29", "alice") or []][-1] == "batch-29"
    assert store.round_trips - before == 3  # NOSCRIPT, then EVAL in the same call; then the MGET


async def test_owners_are_kept_apart_by_key(store: RedisStore) -> None:
    await store.put(rec("shared-id", owner="alice"))
    await store.put(rec("shared-id", owner="bob", size=3))
    alice = await store.get("shared-id", "alice")
    bob = await store.get("shared-id", "bob")
    assert alice is not None and bob is not None and alice.input_items != bob.input_items
    assert await store.delete("shared-id", "bob") is True
    assert await store.get("shared-id", "alice") == alice


async def test_retention_hides_a_response_after_its_ttl_but_keeps_it_for_younger_descendants(
    redis_server: RedisServer,
) -> None:
    short = make(redis_server.url, ttl_s=1)
    long = RedisStore(open_link(redis_server.url), prefix=short.prefix, ttl_s=3600)
    try:
        await short.put(rec("old"))
        await short.put(rec("lonely"))
        await long.put(rec("young", "old"))  # continues the old one: its context must stay whole
        assert await short.get("old", "alice") is not None
        deadline = time.monotonic() + 5
        while await short.get("old", "alice") is not None:
            assert time.monotonic() < deadline, "the 1 s response is still visible after 5 s"
            await asyncio.sleep(0.1)
        assert await short.delete("old", "alice") is False  # invisible is invisible: not deletable
        assert await short.chain("old", "alice") is None
        chain = await long.chain("young", "alice")
        assert [r.id for r in chain or []] == ["old", "young"]
        records = short._records_prefix("alice")
        assert int(redis_server.command("TTL", records + "old")[1:-2]) > 3000  # kept as long as "young"
        lonely_key = records + "lonely"
        while redis_server.command("EXISTS", lonely_key) != b":0\r\n":  # nothing needs it: gone
            assert time.monotonic() < deadline + 5
            await asyncio.sleep(0.1)
    finally:
        await short.aclose()
        await long.aclose()


def test_expiry_granularity() -> None:
    assert expiry_granularity(30 * 86400) == 3600
    assert expiry_granularity(1) == 1
    assert expiry_granularity(1000) == 10


@pytest.mark.parametrize(
    ("spec", "kind", "hosts", "service", "db"),
    [
        ("redis://127.0.0.1:6380/2", "standalone", (), "", 2),
        ("rediss://user:pw@cache.internal:6380", "standalone", (), "", 0),
        (
            "redis+sentinel://:pw@s1:26379,s2/mymaster/3",
            "sentinel",
            (("s1", 26379), ("s2", 26379)),
            "mymaster",
            3,
        ),
        ("redis+cluster://n1:7000,n2:7001", "cluster", (("n1", 7000), ("n2", 7001)), "", 0),
    ],
)
def test_store_urls(spec: str, kind: str, hosts: tuple[tuple[str, int], ...], service: str, db: int) -> None:
    parsed = parse_spec(spec)
    assert (parsed.kind, parsed.hosts, parsed.service, parsed.db) == (kind, hosts, service, db)
    assert "pw" not in parsed.where


async def test_open_store_redis_modes(redis_server: RedisServer) -> None:
    direct = open_store(redis_server.url, ttl_s=60)
    assert isinstance(direct, RedisStore) and direct.ttl_s == 60
    await direct.aclose()
    behind = open_store(redis_server.url, write="behind")
    assert isinstance(behind, WriteBehindStore) and isinstance(behind.inner, RedisStore)
    await behind.aclose()


# -- outages -----------------------------------------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


class Ticker:
    """Counts event-loop iterations and the longest gap between two, to show the loop never stalls."""

    def __init__(self) -> None:
        self.ticks = 0
        self.longest_gap = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            self.longest_gap = max(self.longest_gap, now - last)
            self.ticks += 1
            last = now

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def timed(coro: object) -> tuple[float, BaseException | None]:
    started = time.perf_counter()
    try:
        await coro  # type: ignore[misc]
    except Exception as error:
        return time.perf_counter() - started, error
    return time.perf_counter() - started, None


async def until_healthy(store: RedisStore, limit_s: float = 10.0) -> float:
    started = time.monotonic()
    while True:
        try:
            await store.get("probe", "alice")
            return time.monotonic() - started
        except StoreUnavailable:
            assert time.monotonic() - started < limit_s, "the store did not recover"
            await asyncio.sleep(0.05)


async def test_a_hung_redis_fails_calls_within_the_timeout_then_fast_and_heals(
    own_redis: RedisServer,
) -> None:
    store = make(own_redis.url)
    link: RedisLink = store.link
    try:
        await store.put(rec("before"))
        own_redis.pause()  # SIGSTOP: connections open, nothing answers
        with Ticker() as ticker:
            elapsed, error = await timed(store.get("before", "alice"))
            assert isinstance(error, StoreUnavailable)
            assert elapsed < link.call_timeout_s + 1.0
            assert not link.available
            results = await asyncio.gather(*(timed(store.chain("before", "alice")) for _ in range(50)))
            assert all(isinstance(err, StoreUnavailable) for _, err in results)
            assert max(seconds for seconds, _ in results) < 0.1  # the breaker: no call waits on a hung Redis
        assert ticker.longest_gap < 0.5, ticker.longest_gap
        own_redis.resume()
        await until_healthy(store)
        assert link.available
        assert (await store.get("before", "alice")) == rec("before")
    finally:
        own_redis.resume()
        await store.aclose()


async def test_a_stopped_redis_refuses_fast_and_a_restart_on_the_same_data_heals(
    own_redis: RedisServer,
) -> None:
    store = make(own_redis.url)
    try:
        await store.put(rec("a"))
        await store.put(rec("b", "a"))
        own_redis.stop()  # SIGTERM
        with Ticker() as ticker:
            elapsed, error = await timed(store.put(rec("c", "b")))
            assert isinstance(error, StoreUnavailable) and elapsed < 1.0
            for _ in range(20):
                _, error = await timed(store.get("a", "alice"))
                assert isinstance(error, StoreUnavailable)
        assert ticker.longest_gap < 0.5
        own_redis.start()  # the same port and data directory
        recovered = await until_healthy(store)
        assert recovered < 5.0  # the breaker's backoff is capped at 2 s
        assert [r.id for r in await store.chain("b", "alice") or []] == ["a", "b"]  # the AOF kept them
        await store.put(rec("c", "b"))
        assert [r.id for r in await store.chain("c", "alice") or []] == ["a", "b", "c"]
    finally:
        await store.aclose()


# -- TLS ---------------------------------------------------------------------------------------------------


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: `make test` installs it (apt-get install -y openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    extensions = directory / "san.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    for args in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "1",
         "-subj", "/CN=loopwire test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "1", "-extfile", extensions],
    ):  # fmt: skip
        subprocess.run([openssl, *map(str, args)], check=True, capture_output=True)
    return ca, cert, key


async def test_rediss_verifies_the_server_certificate(tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path / "tls")
    tls_port = free_port()
    tls = (
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(cert),
        "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(ca),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    server = RedisServer(tmp_path / "redis", extra=tls).start()
    trusted = make(f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}")
    untrusted = make(f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=required")
    try:
        await trusted.put(rec("a"))
        await trusted.put(rec("b", "a"))
        assert [r.id for r in await trusted.chain("b", "alice") or []] == ["a", "b"]
        with pytest.raises(StoreUnavailable) as refused:
            await untrusted.get("a", "alice")  # a server it cannot verify is refused, not trusted
        causes = []
        error: BaseException | None = refused.value
        while error is not None:
            causes.append(error)
            error = error.__cause__ or error.__context__
        assert any(isinstance(cause, ssl.SSLCertVerificationError) for cause in causes), causes
    finally:
        await trusted.aclose()
        await untrusted.aclose()
        server.stop()
