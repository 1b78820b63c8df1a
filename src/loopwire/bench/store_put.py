"""`loopwire bench store`: how long `await store.put(record)` takes as the caller sees it, MemoryStore,
SqliteStore directly (through its worker thread) and WriteBehindStore.

Each put is one turn's record: ~6 KB of input_items plus a ~2 KB Response JSON, chained to the previous
turn. Puts run back to back, and again with a gap between them (a stand-in for the model generating the
next turn, during which the write-behind task drains). Prints p50/p90/p99 per scenario, plus how long the
write-behind store then needs to make everything durable.

Owns that measurement only; must not start a server.

    loopwire bench store [--n 2000] [--gap-ms 1] [--uvloop] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..store.base import Store, StoredResponse
from ..store.memory import MemoryStore
from ..store.sqlite import SqliteStore
from ..store.write_behind import WriteBehindStore


def payloads() -> tuple[bytes, bytes]:
    """A 6 KB input_items array (one turn's new items) and a ~2 KB Response JSON."""
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": ""}]}
    overhead = len(json.dumps([item]))
    item["content"] = [{"type": "input_text", "text": "x" * (6 * 1024 - overhead)}]
    input_items = json.dumps([item]).encode()
    response = json.dumps(
        {
            "id": "resp_x",
            "object": "response",
            "status": "completed",
            "output": [{"type": "message", "content": [{"type": "output_text", "text": "y" * 1800}]}],
        }
    ).encode()
    return input_items, response


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(store: Store, n: int, gap_s: float, tag: str) -> list[float]:
    input_items, response = payloads()
    samples: list[float] = []
    prev: str | None = None
    for i in range(n):
        rid = f"resp_{tag}_{i:06d}"
        record = StoredResponse(rid, "bench", prev, int(time.time()), input_items, response)
        start = time.perf_counter()
        await store.put(record)
        samples.append((time.perf_counter() - start) * 1e6)
        prev = rid
        if gap_s:
            await asyncio.sleep(gap_s)
    return samples


def report(name: str, samples: list[float], extra: str = "") -> None:
    print(
        f"{name:<44} p50 {statistics.median(samples):9.1f} us   p90 {percentile(samples, 0.9):9.1f} us"
        f"   p99 {percentile(samples, 0.99):9.1f} us{extra}"
    )


async def run(n: int, gap_ms: float, root: Path) -> None:
    input_items, response = payloads()
    sizes = f"input_items {len(input_items)} B, response {len(response)} B"
    print(f"{n} puts per scenario; {sizes}; databases in {root}")
    scenarios: list[tuple[str, Callable[[Path], Store], float]] = []
    for gap in (0.0, gap_ms / 1000):
        label = "back to back" if gap == 0 else f"{gap_ms:g} ms gap"
        scenarios += [
            (f"MemoryStore, {label}", lambda _p: MemoryStore(), gap),
            (f"SqliteStore (write-through), {label}", SqliteStore, gap),
            (f"WriteBehindStore(SqliteStore), {label}", lambda p: WriteBehindStore(SqliteStore(p)), gap),
        ]
    for index, (name, factory, gap) in enumerate(scenarios):
        store = factory(root / f"bench_{index}.db")
        await measure(store, 50, 0.0, "warmup")
        if isinstance(store, WriteBehindStore):
            await store.flush()
        samples = await measure(store, n, gap, "run")
        extra = ""
        if isinstance(store, WriteBehindStore):
            start = time.perf_counter()
            await store.flush()
            extra = f"   (then flush {1e3 * (time.perf_counter() - start):.1f} ms)"
        report(name, samples, extra)
        await store.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loopwire bench store", description="how long a store's put takes")
    parser.add_argument("--n", type=int, default=2000, help="puts per scenario")
    parser.add_argument("--gap-ms", type=float, default=1.0, help="pause between puts in the gap scenarios")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.uvloop:
        import uvloop

        uvloop.install()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(run(args.n, args.gap_ms, args.dir))
        return 0
    with tempfile.TemporaryDirectory(prefix="loopwire-bench-") as tmp:
        asyncio.run(run(args.n, args.gap_ms, Path(tmp)))
    return 0
