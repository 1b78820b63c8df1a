"""`loopwire bench turns`: per-turn latency and server CPU of a growing agent conversation, WebSocket mode
vs HTTP, side by side.

Starts `loopwire serve` (sim engine at zero latency) and a bare uvicorn echo (the transport floor) as
subprocesses, then runs N conversations of T turns over each transport, alternating transports so that
drift on this noisy machine hits all of them alike. Each turn answers the previous turn's tool call with a
tool output of --output-bytes, so the history grows to about T x output-bytes. Server CPU per turn is read
from /proc/PID/task/*/schedstat (nanoseconds on CPU, all threads) around each turn.

Transports:
  ws            WebSocket mode, store=false: previous_response_id + the new tool output only
  ws-stored     the same with store=true (committed per --store-write)
  http-full     HTTP + SSE, store=false: the whole conversation every turn (stateless)
  http-chained  HTTP + SSE, store=true: previous_response_id + the new tool output, parent from the store
  echo          bare uvicorn echo of a fixed 21-event turn, same client as ws: the floor

Owns this benchmark's loop and table; the servers, clients and workload are the package's own.

    loopwire bench turns --turns 50 --conversations 20 --output-bytes 6000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from .cpu import process_cpu_ns
from .processes import free_port, serving, stop_process, wait_http
from .table import Results, Sample, alternate, label, medians, p50, windows, write_summary
from .wire import COMPLETED, LeanSocket, sse_turn
from .workload import Conversation, base_body

TRANSPORTS = ["ws", "ws-stored", "http-full", "http-chained", "echo"]


class Bench:
    def __init__(self, args: argparse.Namespace, pids: dict[str, int], base: str, echo: str) -> None:
        self.args = args
        self.pids = pids  # "server" and "echo"
        self.base = base
        self.echo = echo
        self.results: dict[str, Results] = {name: Results() for name in args.transports}

    def cpu_now(self, transport: str) -> int:
        return process_cpu_ns(self.pids["echo" if transport == "echo" else "server"]) or 0

    async def ws_conversation(self, transport: str, conv: Conversation, record: bool) -> None:
        url = (self.echo if transport == "echo" else self.base.replace("http://", "ws://")) + "/v1/responses"
        socket = await LeanSocket.connect(url)
        try:
            for turn in range(1, self.args.turns + 1):
                frame = json.dumps(conv.create_event(base_body(store=transport == "ws-stored"))).encode()
                cpu = self.cpu_now(transport)
                start = time.perf_counter()
                data = await socket.turn(frame)
                elapsed = time.perf_counter() - start
                cpu = self.cpu_now(transport) - cpu
                if not data.startswith(COMPLETED):
                    raise RuntimeError(data.decode())
                conv.absorb(json.loads(data)["response"])
                if record:
                    self.results[transport].add(turn, Sample(elapsed, len(frame), cpu))
        finally:
            socket.close()

    async def http_conversation(
        self, session: aiohttp.ClientSession, transport: str, conv: Conversation, record: bool
    ) -> None:
        chained = transport == "http-chained"
        for turn in range(1, self.args.turns + 1):
            body = {**base_body(store=chained), "stream": True}
            if chained:
                body["input"] = conv.delta
                if conv.previous_id is not None:
                    body["previous_response_id"] = conv.previous_id
            else:
                body["input"] = conv.history
            payload = json.dumps(body).encode()
            cpu = self.cpu_now(transport)
            start = time.perf_counter()
            completed = await sse_turn(session, self.base + "/v1/responses", payload)
            elapsed = time.perf_counter() - start
            cpu = self.cpu_now(transport) - cpu
            conv.absorb(json.loads(completed)["response"])
            if record:
                self.results[transport].add(turn, Sample(elapsed, len(payload), cpu))

    async def run(self) -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as session:

            async def conversation(transport: str, seed: int, record: bool) -> int:
                conv = Conversation(seed=seed, output_bytes=self.args.output_bytes)
                if transport.startswith("http"):
                    await self.http_conversation(session, transport, conv, record)
                else:
                    await self.ws_conversation(transport, conv, record)
                return len(json.dumps(conv.history))

            args = self.args
            await alternate(args.transports, args.conversations, args.warmup, self.results, conversation)


def report(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    last = args.turns
    early, late = windows(last)
    history = p50([float(x) for x in next(iter(bench.results.values())).history_bytes])
    print(
        f"\n{args.conversations} conversations x {args.turns} turns per transport, "
        f"tool output {args.output_bytes} B per turn (history ~{history / 1024:.0f} KiB at the end), "
        f"sim engine at zero latency, store writes {args.store_write}\n"
    )
    print(
        f"| transport | p50 turn 1 (ms) | p50 turn {last} (ms) | p50 turns {label(early)} (ms) "
        f"| p50 turns {label(late)} (ms) | late / early | server CPU/turn early (ms) "
        f"| server CPU/turn late (ms) | bytes up turn {last} |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary: dict[str, Any] = {}
    for name, results in bench.results.items():
        row = {
            **medians(results, early, late),
            "turn1_ms": p50([s.latency_s for s in results.turns.get(1, [])]) * 1000,
            "turn_last_ms": p50([s.latency_s for s in results.turns.get(last, [])]) * 1000,
            "bytes_up_last": int(p50([float(s.bytes_up) for s in results.turns.get(last, [])])),
        }
        summary[name] = row
        print(
            f"| {name} | {row['turn1_ms']:.3f} | {row['turn_last_ms']:.3f} | {row['early_ms']:.3f} "
            f"| {row['late_ms']:.3f} | {row['late_ms'] / row['early_ms']:.2f} "
            f"| {row['cpu_early_ms']:.3f} | {row['cpu_late_ms']:.3f} | {row['bytes_up_last']:,} |"
        )
    if "ws" in summary:
        print()
        for name, row in summary.items():
            if name != "ws":
                ratio = row["late_ms"] / summary["ws"]["late_ms"]
                print(f"turns {label(late)}: {name} / ws latency = {ratio:.2f}x")
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loopwire bench turns",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output-bytes", type=int, default=6000)
    parser.add_argument("--store-write", default="inline", choices=["inline", "behind", "through"])
    parser.add_argument("--transports", nargs="+", default=TRANSPORTS, choices=TRANSPORTS)
    parser.add_argument("--server-arg", action="append", default=[], help="extra argument for loopwire serve")
    parser.add_argument("--json", type=Path, help="also write the summary here as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    echo_port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="loopwire-bench-") as tmp,
        serving(f"sqlite:{tmp}/bench.db", ["--store-write", args.store_write, *args.server_arg]) as server,
    ):
        echo = subprocess.Popen([sys.executable, "-m", "loopwire.bench.echo", str(echo_port)])
        try:
            wait_http(f"http://127.0.0.1:{echo_port}/", echo)
            pids = {"server": server.pid, "echo": echo.pid}
            bench = Bench(args, pids, server.origin, f"ws://127.0.0.1:{echo_port}")
            uvloop.run(bench.run())
        finally:
            stop_process(echo)
    write_summary(args.json, args, report(bench, args))
    return 0
