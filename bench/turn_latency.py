"""Per-turn latency and server CPU of a growing agent conversation: WebSocket mode vs HTTP, side by side.

Starts `loopwire serve` (sim engine at zero latency) and a bare uvicorn echo (the transport floor) as
subprocesses, then runs N conversations of T turns over each transport, alternating transports so that
drift on this noisy machine hits all of them alike. Each turn answers the previous turn's tool call with a
tool output of --output-bytes, so the history grows to about T x output-bytes. Server CPU per turn is read
from /proc/PID/task/*/schedstat (nanoseconds on CPU, all threads) around each turn.

Transports:
  ws            WebSocket mode, store=false: previous_response_id + the new tool output only
  ws-stored     the same with store=true (the durable write runs behind the turn)
  http-full     HTTP + SSE, store=false: the whole conversation every turn (stateless)
  http-chained  HTTP + SSE, store=true: previous_response_id + the new tool output, parent from the store
  echo          bare uvicorn echo of a fixed 21-event turn, same client as ws: the floor

    python bench/turn_latency.py --turns 50 --conversations 20 --output-bytes 6000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import picows
import uvloop
from harness import (
    TERMINAL,
    Results,
    TerminalListener,
    free_port,
    loopwire_server,
    p50,
    wait_ready,
    write_summary,
)

TOOL_SPECS = [
    ("read_file", "Read a file of the repository.", {"path": {"type": "string"}}),
    ("grep", "Search the repository.", {"pattern": {"type": "string"}, "path": {"type": "string"}}),
    ("list_files", "List files under a directory.", {"path": {"type": "string"}}),
    ("write_file", "Write a file.", {"path": {"type": "string"}, "content": {"type": "string"}}),
    ("run_tests", "Run the test suite.", {"selector": {"type": "string"}}),
]
TOOLS = [
    {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": {
            "type": "object",
            "properties": props,
            "required": list(props),
            "additionalProperties": False,
        },
    }
    for name, description, props in TOOL_SPECS
]
INSTRUCTIONS = "You are a careful coding agent. Use the tools to find and fix the failing test. " * 20
WORDS = "def class return import self value result assert error file path line test config".split()
TRANSPORTS = ["ws", "ws-stored", "http-full", "http-chained", "echo"]


def tool_output(size: int, rng: random.Random) -> str:
    lines: list[str] = []
    total = 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(10))
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)[:size]


def server_cpu_ns(pid: int) -> int:
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[0])
        except FileNotFoundError:
            continue
    return total


def base_body(store: bool) -> dict[str, Any]:
    return {
        "model": "sim",
        "instructions": INSTRUCTIONS,
        "tools": TOOLS,
        "tool_choice": "required",
        "store": store,
    }


class Conversation:
    """The client's view: the whole history, and the new items of the next turn."""

    def __init__(self, seed: int, output_bytes: int) -> None:
        self.rng = random.Random(seed)
        self.output_bytes = output_bytes
        first = {"type": "message", "role": "user", "content": "The test test_parse fails. Find and fix it."}
        self.history: list[dict[str, Any]] = [first]
        self.delta: list[dict[str, Any]] = [first]
        self.previous_id: str | None = None

    def absorb(self, response: dict[str, Any]) -> None:
        self.previous_id = response["id"]
        output = response["output"]
        self.history.extend(output)
        calls = [item for item in output if item["type"] == "function_call"]
        if not calls:
            raise RuntimeError(f"expected a function call, got {output}")
        self.delta = [
            {
                "type": "function_call_output",
                "call_id": call["call_id"],
                "output": tool_output(self.output_bytes, self.rng),
            }
            for call in calls
        ]
        self.history.extend(self.delta)


@dataclass
class Sample:
    latency_s: float
    bytes_up: int
    server_cpu_ns: int


class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        server: subprocess.Popen[bytes],
        echo_server: subprocess.Popen[bytes],
        base: str,
        echo: str,
    ) -> None:
        self.args = args
        self.server = server
        self.echo_server = echo_server
        self.base = base
        self.echo = echo
        self.results: dict[str, Results[Sample]] = {name: Results() for name in args.transports}

    def cpu_now(self, transport: str) -> int:
        return server_cpu_ns((self.echo_server if transport == "echo" else self.server).pid)

    async def ws_conversation(self, transport: str, conv: Conversation, record: bool) -> None:
        """WebSocket mode with picows, a lean client, so the numbers measure the server, not the client."""
        loop = asyncio.get_running_loop()
        url = (self.echo if transport == "echo" else self.base.replace("http://", "ws://")) + "/v1/responses"
        ws, listener = await picows.ws_connect(TerminalListener, url, max_frame_size=64 * 1024 * 1024)
        try:
            for turn in range(1, self.args.turns + 1):
                body = {
                    "type": "response.create",
                    **base_body(store=transport == "ws-stored"),
                    "input": conv.delta,
                }
                if conv.previous_id is not None:
                    body["previous_response_id"] = conv.previous_id
                frame = json.dumps(body).encode()
                listener.done = loop.create_future()
                cpu = self.cpu_now(transport)
                start = time.perf_counter()
                ws.send(picows.WSMsgType.TEXT, frame)
                data = await listener.done
                elapsed = time.perf_counter() - start
                cpu = self.cpu_now(transport) - cpu
                if not data.startswith(TERMINAL[0]):
                    raise RuntimeError(data.decode())
                conv.absorb(json.loads(data)["response"])
                if record:
                    self.results[transport].add(turn, Sample(elapsed, len(frame), cpu))
        finally:
            ws.disconnect()

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
            async with session.post(
                self.base + "/v1/responses", data=payload, headers={"content-type": "application/json"}
            ) as reply:
                if reply.status != 200:
                    raise RuntimeError(await reply.text())
                completed = None
                async for line in reply.content:
                    if line.startswith(b'data: {"type":"response.completed"'):
                        completed = line[6:]
            elapsed = time.perf_counter() - start
            cpu = self.cpu_now(transport) - cpu
            if completed is None:
                raise RuntimeError("the stream ended without response.completed")
            conv.absorb(json.loads(completed)["response"])
            if record:
                self.results[transport].add(turn, Sample(elapsed, len(payload), cpu))

    async def run(self) -> None:
        total = self.args.conversations + self.args.warmup
        connector = aiohttp.TCPConnector(limit=4)
        async with aiohttp.ClientSession(connector=connector) as session:
            for index in range(total):
                record = index >= self.args.warmup
                order = self.args.transports if index % 2 == 0 else list(reversed(self.args.transports))
                for transport in order:
                    conv = Conversation(seed=index, output_bytes=self.args.output_bytes)
                    if transport.startswith("http"):
                        await self.http_conversation(session, transport, conv, record)
                    else:
                        await self.ws_conversation(transport, conv, record)
                    if record:
                        self.results[transport].history_bytes.append(len(json.dumps(conv.history)))
                print(f"\r  conversation {index + 1}/{total}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def report(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    last = args.turns
    early, late = range(1, min(5, last) + 1), range(max(1, last - 5), last + 1)
    first_results = next(iter(bench.results.values()))
    history = p50([float(x) for x in first_results.history_bytes])
    print(
        f"\n{args.conversations} conversations x {args.turns} turns per transport, "
        f"tool output {args.output_bytes} B per turn (history ~{history / 1024:.0f} KiB at the end), "
        f"sim engine at zero latency, store writes {args.store_write}\n"
    )
    print(
        f"| transport | p50 turn 1 (ms) | p50 turn {last} (ms) "
        f"| p50 turns {early.start}-{early.stop - 1} (ms) | p50 turns {late.start}-{late.stop - 1} (ms) "
        "| late / early | server CPU/turn early (ms) | server CPU/turn late (ms) "
        f"| bytes up turn {last} |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary: dict[str, Any] = {}
    for name, results in bench.results.items():
        early_s, late_s = results.window(early), results.window(late)
        row = {
            "turn1_ms": p50([s.latency_s for s in results.turns.get(1, [])]) * 1000,
            "turn_last_ms": p50([s.latency_s for s in results.turns.get(last, [])]) * 1000,
            "early_ms": p50([s.latency_s for s in early_s]) * 1000,
            "late_ms": p50([s.latency_s for s in late_s]) * 1000,
            "cpu_early_ms": p50([s.server_cpu_ns / 1e9 for s in early_s]) * 1000,
            "cpu_late_ms": p50([s.server_cpu_ns / 1e9 for s in late_s]) * 1000,
            "cpu_turn1_ms": p50([s.server_cpu_ns / 1e9 for s in results.turns.get(1, [])]) * 1000,
            "cpu_turn_last_ms": p50([s.server_cpu_ns / 1e9 for s in results.turns.get(last, [])]) * 1000,
            "bytes_up_last": int(p50([float(s.bytes_up) for s in results.turns.get(last, [])])),
        }
        summary[name] = row
        print(
            f"| {name} | {row['turn1_ms']:.3f} | {row['turn_last_ms']:.3f} | {row['early_ms']:.3f} "
            f"| {row['late_ms']:.3f} | {row['late_ms'] / row['early_ms']:.2f} "
            f"| {row['cpu_early_ms']:.3f} | {row['cpu_late_ms']:.3f} | {row['bytes_up_last']:,} |"
        )
    if "ws" in summary:
        ws_late = summary["ws"]["late_ms"]
        print()
        for name, row in summary.items():
            if name != "ws":
                ratio = row["late_ms"] / ws_late
                print(f"turns {late.start}-{late.stop - 1}: {name} / ws latency = {ratio:.2f}x")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output-bytes", type=int, default=6000)
    parser.add_argument("--store-write", default="inline", choices=["inline", "behind", "through"])
    parser.add_argument("--transports", nargs="+", default=TRANSPORTS, choices=TRANSPORTS)
    parser.add_argument("--server-arg", action="append", default=[], help="extra argument for loopwire serve")
    parser.add_argument("--json", type=Path, help="also write the summary here as JSON")
    args = parser.parse_args()

    echo_port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="loopwire-bench-") as tmp,
        loopwire_server(f"sqlite:{tmp}/bench.db", ["--store-write", args.store_write, *args.server_arg]) as (
            server,
            base,
        ),
    ):
        echo = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("echo_server.py")), str(echo_port)]
        )
        try:
            wait_ready(f"http://127.0.0.1:{echo_port}/", echo)
            bench = Bench(args, server, echo, base, f"ws://127.0.0.1:{echo_port}")
            uvloop.run(bench.run())
        finally:
            echo.terminate()
            echo.wait(10)
    write_summary(args.json, args, report(bench, args))


if __name__ == "__main__":
    main()
