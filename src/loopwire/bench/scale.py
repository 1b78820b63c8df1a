"""`loopwire bench scale`: what the shared Redis store and more nodes cost and give, in one run.

1. Store latency: one node on SQLite (inline writes) and one on Redis (AOF everysec), side by side, the
   same synthetic agent conversation (`workload`) over WebSocket mode with store=true and over HTTP chained
   with previous_response_id; p50 over turns 1-5 and the last six, the Redis / SQLite ratio, and the Redis
   round trips per turn (INFO commandstats, the whole server: the node's lease heartbeats included).
2. Nodes: 1, 2 and 3 `loopwire serve` nodes on the same Redis behind a real HAProxy (leastconn, health
   checks on /readyz); a fixed client load of C concurrent WebSocket conversations of T turns each
   (store=true) through the balancer; turns/s, every node's CPU per turn and the client's.

Everything runs on this machine: the client competes with the nodes, Redis and HAProxy for the same cores,
so the node table says how the work spreads and what a turn costs, not what a larger machine would do.
Owns this benchmark's phases and tables; servers, clients and the workload are the package's own.

    loopwire bench scale [--turns 50] [--conversations 6] [--load 16] [--load-turns 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import uvloop

from .cpu import process_cpu_ns
from .haproxy import Backend, HaproxyProcess
from .processes import ServerProcess, start_nodes
from .redis_processes import RedisServer
from .table import Results, alternate, label, medians, windows, write_summary
from .turns import Bench
from .wire import COMPLETED, LeanSocket
from .workload import Conversation, base_body

STORE_TRANSPORTS = ("ws-stored", "http-chained")


ROUND_TRIP_COMMANDS = ("evalsha", "eval", "mget")
"""What loopwire sends Redis as whole requests (the commands its scripts run inside count apart)."""


def redis_round_trips(redis: RedisServer) -> int:
    return sum(redis.calls(command) for command in ROUND_TRIP_COMMANDS)


# -- 1. Redis vs SQLite per turn -----------------------------------------------------------------------


async def store_latency(
    args: argparse.Namespace, sqlite: ServerProcess, redis_node: ServerProcess, redis: RedisServer
) -> dict[str, Any]:
    options = SimpleNamespace(
        turns=args.turns, output_bytes=args.output_bytes, transports=list(STORE_TRANSPORTS)
    )
    benches = {
        "sqlite": Bench(options, {"server": sqlite.pid}, sqlite.origin, ""),  # type: ignore[arg-type]
        "redis": Bench(options, {"server": redis_node.pid}, redis_node.origin, ""),  # type: ignore[arg-type]
    }
    names = [f"{transport}/{store}" for transport in STORE_TRANSPORTS for store in benches]
    results = {name: Results() for name in names}
    trips: dict[str, list[int]] = {transport: [0, 0] for transport in STORE_TRANSPORTS}  # round trips, turns

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as session:

        async def conversation(name: str, seed: int, record: bool) -> int:
            transport, store = name.split("/")
            bench = benches[store]
            conv = Conversation(seed=seed, output_bytes=args.output_bytes)
            before = redis_round_trips(redis) if store == "redis" else 0
            if transport == "http-chained":
                await bench.http_conversation(session, transport, conv, record)
            else:
                await bench.ws_conversation(transport, conv, record)
            if store == "redis" and record:
                trips[transport][0] += redis_round_trips(redis) - before
                trips[transport][1] += args.turns
            results[name].turns = bench.results[transport].turns
            return len(json.dumps(conv.history))

        await alternate(names, args.conversations, args.warmup, results, conversation)

    last = args.turns
    early, late = windows(last)
    print(
        f"\n1. Redis vs SQLite: {args.conversations} conversations x {last} turns per row, tool output "
        f"{args.output_bytes} B per turn, sim engine at zero latency, one node per store; p50 over turns "
        f"{label(early)} and {label(late)} of every conversation\n"
    )
    print(
        f"| transport | SQLite turns {label(early)} (ms) | Redis turns {label(early)} (ms) | Redis / SQLite "
        f"| SQLite turns {label(late)} (ms) | Redis turns {label(late)} (ms) | Redis / SQLite |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    summary: dict[str, Any] = {}
    for transport in STORE_TRANSPORTS:
        row: dict[str, float] = {}
        for store in benches:
            row.update(
                {
                    f"{store}_{key}": value
                    for key, value in medians(benches[store].results[transport], early, late).items()
                }
            )
        row["ratio_early"] = row["redis_early_ms"] / row["sqlite_early_ms"]
        row["ratio_late"] = row["redis_late_ms"] / row["sqlite_late_ms"]
        summary[transport] = row
        print(
            f"| {transport} | {row['sqlite_early_ms']:.2f} | {row['redis_early_ms']:.2f} | "
            f"{row['ratio_early']:.2f}x | {row['sqlite_late_ms']:.2f} | {row['redis_late_ms']:.2f} | "
            f"{row['ratio_late']:.2f}x |"
        )
    print("\nRedis round trips per turn (EVALSHA, EVAL and MGET; the lease heartbeats included):")
    for transport, (count, turned) in trips.items():
        summary[transport]["redis_round_trips_per_turn"] = count / max(1, turned)
        print(f"  {transport}: {count / max(1, turned):.2f}")
    return summary


# -- 2. 1, 2 and 3 nodes behind HAProxy ----------------------------------------------------------------


async def load(url: str, conversations: int, turns: int, output_bytes: int) -> int:
    """`conversations` concurrent WebSocket-mode conversations of `turns` stored turns; turns run."""

    async def one(seed: int) -> int:
        conv = Conversation(seed=seed, output_bytes=output_bytes)
        socket = await LeanSocket.connect(url)
        try:
            for _ in range(turns):
                data = await socket.turn(json.dumps(conv.create_event(base_body(store=True))).encode())
                if not data.startswith(COMPLETED):
                    raise RuntimeError(data[:300].decode(errors="replace"))
                conv.absorb(json.loads(data)["response"])
        finally:
            socket.close()
        return turns

    return sum(await asyncio.gather(*(one(1000 + seed) for seed in range(conversations))))


def measure_nodes(
    args: argparse.Namespace, redis: RedisServer, directory: Path, count: int
) -> dict[str, Any]:
    """One run of the client load through HAProxy in front of `count` fresh nodes."""
    nodes = start_nodes(count, redis.url, directory)
    balancer = HaproxyProcess(
        directory / "haproxy", [Backend(f"n{i}", node.port) for i, node in enumerate(nodes)]
    )
    try:
        balancer.start()
        url = balancer.base_url.replace("http://", "ws://") + "/responses"
        uvloop.run(load(url, 2, 3, args.output_bytes))  # warm up every node's first turns
        before = [process_cpu_ns(node.pid) or 0 for node in nodes]
        client_before = time.process_time()
        started = time.perf_counter()
        done = uvloop.run(load(url, args.load, args.load_turns, args.output_bytes))
        elapsed = time.perf_counter() - started
        client_cpu = time.process_time() - client_before
        after = [process_cpu_ns(node.pid) or 0 for node in nodes]
    finally:
        balancer.stop()
        for node in nodes:
            node.stop()
    spent = [end - start for start, end in zip(before, after, strict=True)]
    return {
        "turns_per_s": done / elapsed,
        "node_cpu_ms_per_turn": sum(spent) / 1e6 / done,
        "client_cpu_ms_per_turn": client_cpu * 1000 / done,
        "cpu_share_percent": [round(100 * cpu / max(1, sum(spent))) for cpu in spent],
    }


def node_scaling(args: argparse.Namespace, redis: RedisServer, directory: Path) -> dict[str, Any]:
    """`args.rounds` rounds over the node counts, the order reversed every other round; medians."""
    runs: dict[int, list[dict[str, Any]]] = {count: [] for count in args.nodes}
    for round_index in range(args.rounds):
        for count in args.nodes if round_index % 2 == 0 else list(reversed(args.nodes)):
            place = directory / f"round-{round_index}-nodes-{count}"
            runs[count].append(measure_nodes(args, redis, place, count))
            print(f"\r  round {round_index + 1}/{args.rounds}, {count} node(s)", end="", file=sys.stderr)
    print(
        f"\n\n2. Nodes behind HAProxy on one Redis: client load {args.load} concurrent WebSocket "
        f"conversations x {args.load_turns} stored turns (tool output {args.output_bytes} B), one client "
        f"process, sim engine at zero latency; medians of {args.rounds} rounds\n"
    )
    print("| nodes | turns/s | node CPU per turn (ms) | client CPU per turn (ms) | node CPU share |")
    print("|---:|---:|---:|---:|---|")
    summary: dict[str, Any] = {}
    for count, rows in runs.items():
        row = {
            key: statistics.median(r[key] for r in rows)
            for key in ("turns_per_s", "node_cpu_ms_per_turn", "client_cpu_ms_per_turn")
        }
        row["cpu_share_percent"] = rows[-1]["cpu_share_percent"]
        summary[str(count)] = row
        share = " / ".join(f"{part}%" for part in row["cpu_share_percent"])
        print(
            f"| {count} | {row['turns_per_s']:.0f} | {row['node_cpu_ms_per_turn']:.2f} | "
            f"{row['client_cpu_ms_per_turn']:.2f} | {share} |"
        )
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loopwire bench scale", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--turns", type=int, default=50, help="turns per conversation in the store phase")
    parser.add_argument("--conversations", type=int, default=6, help="recorded conversations per row")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--output-bytes", type=int, default=6000)
    parser.add_argument("--load", type=int, default=16, help="concurrent conversations in the node phase")
    parser.add_argument("--load-turns", type=int, default=60, help="turns per conversation in the node phase")
    parser.add_argument("--nodes", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2, 3])
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the node counts (medians)")
    parser.add_argument("--skip-store", action="store_true", help="only the node phase")
    parser.add_argument("--skip-nodes", action="store_true", help="only the store phase")
    parser.add_argument("--json", type=Path, help="also write the summary here as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="loopwire-bench-scale-") as tmp:
        directory = Path(tmp)
        redis = RedisServer(directory / "redis", appendfsync="everysec").start()
        try:
            if not args.skip_store:
                (sqlite,) = start_nodes(1, f"sqlite:{directory / 'bench.db'}", directory / "sqlite")
                (redis_node,) = start_nodes(1, redis.url, directory / "redis-node")
                try:
                    summary["store"] = uvloop.run(store_latency(args, sqlite, redis_node, redis))
                finally:
                    sqlite.stop()
                    redis_node.stop()
            if not args.skip_nodes:
                summary["nodes"] = node_scaling(args, redis, directory)
        finally:
            redis.stop()
    print(file=sys.stderr)
    write_summary(args.json, args, summary)
    return 0
