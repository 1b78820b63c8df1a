"""`loopwire bench soak`: many concurrent WebSocket sessions each running a multi-turn tool loop, plus HTTP
traffic, for a bounded time. Checks that no response is lost or duplicated and that server memory stays
flat after warm-up, and reports p50/p99 turn latency.

Owns the load and its checks; the server and the lean client are the package's own.

    loopwire bench soak --sessions 500 --seconds 120
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from .processes import serving
from .wire import COMPLETED, LeanSocket

TOOLS = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    }
]


@dataclass
class Tally:
    sent: int = 0
    completed: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    stored_ids: list[tuple[str, str]] = field(default_factory=list)  # (api key, response id)
    seen_ids: set[str] = field(default_factory=set)
    duplicates: int = 0

    def record(self, response_id: str) -> None:
        if response_id in self.seen_ids:
            self.duplicates += 1
        self.seen_ids.add(response_id)
        self.completed += 1


async def ws_session(index: int, url: str, args: argparse.Namespace, tally: Tally, stop_at: float) -> None:
    rng = random.Random(index)
    key = f"soak-key-{index}"
    store = index % 2 == 0
    await asyncio.sleep(rng.random() * 5)  # stagger the connects
    socket = await LeanSocket.connect(url, {"Authorization": f"Bearer {key}"}, handshake_timeout_s=60)
    try:
        while time.monotonic() < stop_at:
            new_input: list[dict[str, Any]] = [{"role": "user", "content": f"task {rng.random()}"}]
            previous: str | None = None
            for _ in range(args.turns):
                if time.monotonic() >= stop_at:
                    return
                body: dict[str, Any] = {
                    "type": "response.create",
                    "model": "sim",
                    "tools": TOOLS,
                    "tool_choice": "required",
                    "store": store,
                    "input": new_input,
                }
                if previous is not None:
                    body["previous_response_id"] = previous
                started = time.perf_counter()
                tally.sent += 1
                data = await asyncio.wait_for(socket.turn(json.dumps(body).encode()), timeout=60)
                tally.latencies.append(time.perf_counter() - started)
                if not data.startswith(COMPLETED):
                    tally.errors.append(data[:300].decode(errors="replace"))
                    break
                response = json.loads(data)["response"]
                tally.record(response["id"])
                if store:
                    tally.stored_ids.append((key, response["id"]))
                previous = response["id"]
                call = next(item for item in response["output"] if item["type"] == "function_call")
                new_input = [
                    {
                        "type": "function_call_output",
                        "call_id": call["call_id"],
                        "output": "x" * args.output_bytes,
                    }
                ]
    finally:
        socket.close()


async def http_client(index: int, base: str, tally: Tally, stop_at: float) -> None:
    key = f"soak-http-{index}"
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            tally.sent += 1
            async with session.post(
                f"{base}/v1/responses", data=json.dumps({"model": "sim", "input": "hi"}), headers=headers
            ) as reply:
                body = await reply.json()
            tally.latencies.append(time.perf_counter() - started)
            if reply.status != 200:
                tally.errors.append(str(body)[:300])
                continue
            tally.record(body["id"])
            tally.stored_ids.append((key, body["id"]))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def sample_rss(pid: int, samples: list[tuple[float, int]], stop_at: float) -> None:
    start = time.monotonic()
    while time.monotonic() < stop_at:
        samples.append((time.monotonic() - start, rss_kib(pid)))
        await asyncio.sleep(1.0)


async def verify_stored(base: str, stored: list[tuple[str, str]], count: int) -> int:
    """Retrieve a random sample of the stored responses; returns how many were missing."""
    missing = 0
    sample = random.Random(0).sample(stored, min(count, len(stored)))
    async with aiohttp.ClientSession() as session:
        for key, response_id in sample:
            async with session.get(
                f"{base}/v1/responses/{response_id}", headers={"Authorization": f"Bearer {key}"}
            ) as reply:
                if reply.status != 200:
                    missing += 1
    return missing


async def run(args: argparse.Namespace, base: str, pid: int) -> tuple[Tally, list[tuple[float, int]], int]:
    tally = Tally()
    stop_at = time.monotonic() + args.seconds
    rss: list[tuple[float, int]] = []
    url = base.replace("http://", "ws://") + "/v1/responses"
    tasks = [asyncio.create_task(ws_session(i, url, args, tally, stop_at)) for i in range(args.sessions)]
    tasks += [asyncio.create_task(http_client(i, base, tally, stop_at)) for i in range(args.http_clients)]
    tasks.append(asyncio.create_task(sample_rss(pid, rss, stop_at)))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            tally.errors.append(repr(result)[:300])
    missing = await verify_stored(base, tally.stored_ids, args.verify)
    return tally, rss, missing


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="loopwire bench soak", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--http-clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--turns", type=int, default=20, help="turns per conversation before starting anew")
    parser.add_argument("--output-bytes", type=int, default=2000)
    parser.add_argument("--verify", type=int, default=500, help="stored responses to retrieve at the end")
    parser.add_argument("--store", default="sqlite", help="'sqlite' (a temporary file) or 'memory'")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="loopwire-soak-") as tmp:
        store = "memory" if args.store == "memory" else f"sqlite:{Path(tmp) / 'soak.db'}"
        with serving(store) as server:
            tally, rss, missing = uvloop.run(run(args, server.origin, server.pid))
    lost = tally.sent - tally.completed - len(tally.errors)
    warm = [kib for at, kib in rss if at >= min(20.0, args.seconds / 3)]
    latencies = sorted(tally.latencies)
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else float("nan")
    print(f"\n{args.sessions} WebSocket sessions + {args.http_clients} HTTP clients for {args.seconds:g} s")
    print(
        f"turns sent {tally.sent}, completed {tally.completed}, errors {len(tally.errors)}, "
        f"lost {lost}, duplicated ids {tally.duplicates}"
    )
    print(
        f"stored responses retrieved at the end: {min(args.verify, len(tally.stored_ids))} sampled, "
        f"{missing} missing"
    )
    if latencies:
        print(f"turn latency p50 {statistics.median(latencies) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms")
    if warm:
        print(
            f"server RSS: after warm-up {warm[0] / 1024:.1f} MiB, at the end {warm[-1] / 1024:.1f} MiB, "
            f"max {max(warm) / 1024:.1f} MiB"
        )
        series = ", ".join(f"{at:.0f}s {kib / 1024:.1f}" for at, kib in rss[:: max(1, len(rss) // 8)])
        print(f"server RSS over time (MiB): {series}")
    for error in tally.errors[:5]:
        print("error:", error)
    return 1 if lost or tally.duplicates or missing or tally.errors else 0
