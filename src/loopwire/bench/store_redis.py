"""`loopwire bench redis`: Redis vs SQLite as the store, side by side in one run: chain resolution (a
stored conversation of N turns rebuilt from its newest id) and put + get of one turn's record, with the
round trips each costs.

Stores: SqliteStore with inline writes (loopwire's default), and RedisStore on a redis-server this script
starts on a free loopback port (AOF on, appendfsync everysec, then always). Records are one agent turn each
(~6 KB of input items plus a ~2 KB Response). The stores are measured in alternating rounds so machine noise
hits them alike; medians and p90 in microseconds, ratios against SQLite, and the CPU time each resolution
costs this process and (from INFO commandstats) Redis's single thread.

Owns that measurement only; must not start a loopwire server. Needs redis-server and the `redis` extra.

    loopwire bench redis [--lengths 1,10,50,200] [--reps 200] [--puts 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path

from ..store.base import Store, StoredResponse
from ..store.redis.link import open_link
from ..store.redis.store import RedisStore
from ..store.sqlite import SqliteStore
from .redis_processes import RedisServer
from .store_put import payloads


def p90(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def round_trips(store: Store) -> int:
    return store.round_trips if isinstance(store, RedisStore) else 0


async def timed(
    samples: list[float], call: Callable[[], Awaitable[object]], cpu: list[float] | None = None
) -> None:
    """Wall time of one call in us (and this process's CPU time, less noisy on a shared machine)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    await call()
    samples.append((time.perf_counter() - start) * 1e6)
    if cpu is not None:
        cpu.append((time.process_time() - start_cpu) * 1e6)


def redis_usec(server: RedisServer) -> float:
    """Microseconds Redis spent running commands so far (INFO commandstats), for its CPU per operation."""
    total = 0.0
    for stats in server.info("commandstats").values():
        fields = dict(pair.split("=", 1) for pair in stats.split(",") if "=" in pair)
        total += float(fields.get("usec", 0))
    return total


async def build_chain(store: Store, length: int) -> str:
    items, response = payloads()
    tag = uuid.uuid4().hex[:8]
    prev: str | None = None
    for index in range(length):
        rid = f"resp_{tag}_{index}"
        await store.put(StoredResponse(rid, "bench", prev, int(time.time()), items, response))
        prev = rid
    assert prev is not None
    return prev


async def run(lengths: list[int], reps: int, puts: int, root: Path) -> None:
    redis_servers = {
        fsync: RedisServer(root / f"redis-{fsync}", appendfsync=fsync).start()
        for fsync in ("everysec", "always")
    }
    stores: dict[str, Store] = {"sqlite (inline)": SqliteStore(root / "bench.db", inline_writes=True)}
    servers: dict[str, RedisServer] = {}
    for fsync, server in redis_servers.items():
        stores[f"redis ({fsync})"] = RedisStore(open_link(server.url))
        servers[f"redis ({fsync})"] = server
    try:
        items, response = payloads()
        print(
            f"records: input_items {len(items)} B + response {len(response)} B; {reps} resolutions per length"
        )
        print()
        print(
            "| chain length N | store | p50 us | p90 us | p50 vs SQLite | client CPU p50 us | "
            "Redis CPU us | round trips |"
        )
        print("|---:|---|---:|---:|---:|---:|---:|---:|")
        for length in lengths:
            heads = {name: await build_chain(store, length) for name, store in stores.items()}
            samples: dict[str, list[float]] = {name: [] for name in stores}
            cpu: dict[str, list[float]] = {name: [] for name in stores}
            server_usec: dict[str, float] = dict.fromkeys(stores, 0.0)
            trips: dict[str, int] = {}
            for name, store in stores.items():  # warm up: scripts loaded, pages cached
                await store.chain(heads[name], "bench")
            rounds = 10
            for _ in range(rounds):
                for name, store in stores.items():
                    before = round_trips(store)
                    redis = servers.get(name)
                    usec_before = redis_usec(redis) if redis else 0.0
                    for _ in range(max(1, reps // rounds)):
                        await timed(samples[name], partial(store.chain, heads[name], "bench"), cpu[name])
                    trips[name] = (round_trips(store) - before) // max(1, reps // rounds)
                    if redis:
                        server_usec[name] += (
                            (redis_usec(redis) - usec_before) / max(1, reps // rounds) / rounds
                        )
            base = statistics.median(samples["sqlite (inline)"])
            for name in stores:
                median = statistics.median(samples[name])
                redis_side = f"{server_usec[name]:.0f}" if name in servers else "-"
                trip = str(trips[name]) if name in servers else "1 query"
                print(
                    f"| {length} | {name} | {median:.0f} | {p90(samples[name]):.0f} | {median / base:.2f}x | "
                    f"{statistics.median(cpu[name]):.0f} | {redis_side} | {trip} |"
                )
        print()
        print(f"put + get of one turn's record ({puts} each, chained, back to back)")
        print()
        print("| store | put p50 us | put p90 us | get p50 us | get p90 us | put vs SQLite | get vs SQLite |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        put_samples: dict[str, list[float]] = {name: [] for name in stores}
        get_samples: dict[str, list[float]] = {name: [] for name in stores}
        previous: dict[str, str | None] = dict.fromkeys(stores)
        rounds = 10
        for round_index in range(rounds):
            for name, store in stores.items():
                for index in range(puts // rounds):
                    rid = f"resp_put_{round_index}_{index}_{uuid.uuid4().hex[:6]}"
                    record = StoredResponse(rid, "bench", previous[name], int(time.time()), items, response)
                    await timed(put_samples[name], partial(store.put, record))
                    await timed(get_samples[name], partial(store.get, rid, "bench"))
                    previous[name] = rid
        put_base = statistics.median(put_samples["sqlite (inline)"])
        get_base = statistics.median(get_samples["sqlite (inline)"])
        for name in stores:
            put_median = statistics.median(put_samples[name])
            get_median = statistics.median(get_samples[name])
            print(
                f"| {name} | {put_median:.0f} | {p90(put_samples[name]):.0f} | {get_median:.0f} | "
                f"{p90(get_samples[name]):.0f} | {put_median / put_base:.2f}x | "
                f"{get_median / get_base:.2f}x |"
            )
    finally:
        for store in stores.values():
            await store.aclose()
        for server in redis_servers.values():
            server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="loopwire bench redis", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--lengths", default="1,10,50,200", help="chain lengths N, comma-separated")
    parser.add_argument("--reps", type=int, default=200, help="resolutions per length and store")
    parser.add_argument("--puts", type=int, default=1000, help="puts (and gets) per store")
    args = parser.parse_args(argv)
    import uvloop

    uvloop.install()  # as `loopwire serve` runs
    with tempfile.TemporaryDirectory(prefix="loopwire-bench-") as tmp:
        lengths = [int(n) for n in args.lengths.split(",")]
        asyncio.run(run(lengths, args.reps, args.puts, Path(tmp)))
    return 0
