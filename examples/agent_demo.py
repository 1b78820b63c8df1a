"""A short agent-style conversation against a running loopwire server, over HTTP and over WebSocket mode,
with the official `openai` SDK, printing per-turn latency, the server's own time and request payload bytes.

Both transports go through the same client stack, the SDK's async client, and both stream the turn's
events: HTTP resends the whole conversation every turn (stateless, store=false); WebSocket mode sends only
the new tool output plus `previous_response_id`, and the server continues from its connection-local cache.
The SDK's synchronous WebSocket client runs the same turns once more for comparison: it reads the socket on
a thread of its own and hands each frame to the caller's thread.

The server's time per turn comes from its `loopwire.timing` event (start it with `--timing-events on`);
the client's from the SDK's CPU time per turn in this process; the time both spent runnable but waiting for
a CPU from Linux's scheduler statistics (/proc/PID/task/*/schedstat; `--server-pid` for the server's).

    python examples/agent_demo.py --base-url http://127.0.0.1:8000/v1 --turns 12
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file of the repository.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    },
    {
        "type": "function",
        "name": "run_tests",
        "description": "Run the test suite.",
        "parameters": {
            "type": "object",
            "properties": {"selector": {"type": "string"}},
            "required": ["selector"],
        },
    },
]
INSTRUCTIONS = "You are a coding agent. Read files and run tests until the failing test passes."
TASK = "test_parse fails; please fix it."
WORDS = "def class return import self value result assert error file path line test".split()


@dataclass
class Turn:
    wall_ms: float
    client_cpu_ms: float
    server_ms: float | None
    bytes_sent: int
    switches: int
    """Context switches of this process during the turn (voluntary and not)."""
    queued_ms: float | None
    """Time the client's and the server's threads were runnable but waited for a core, summed over
    threads (Linux only)."""


class Conversation:
    """The agent's side: the whole history, the new items of the next turn, the previous response."""

    def __init__(self, size: int) -> None:
        self.rng = random.Random(7)
        self.size = size
        first = {"role": "user", "content": TASK}
        self.history: list[dict[str, Any]] = [first]
        self.new_input: list[dict[str, Any]] = [first]
        self.previous_id: str | None = None

    def body(self, delta: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": "sim",
            "instructions": INSTRUCTIONS,
            "tools": TOOLS,
            "tool_choice": "required",
            "store": False,
            "input": self.new_input if delta else self.history,
        }
        if delta and self.previous_id is not None:
            body["previous_response_id"] = self.previous_id
        return body

    def absorb(self, response: Any) -> None:
        self.previous_id = response.id
        self.new_input = [
            {"type": "function_call_output", "call_id": item.call_id, "output": self._file()}
            for item in response.output
            if item.type == "function_call"
        ]
        self.history += [item.model_dump(exclude_none=True) for item in response.output]
        self.history += self.new_input

    def _file(self) -> str:
        return "\n".join(" ".join(self.rng.choice(WORDS) for _ in range(8)) for _ in range(self.size // 50))


SERVER_PID: int | None = None


def _queued_ns() -> int | None:
    """Nanoseconds this process's (and the server's) threads have waited on a run queue, or None."""
    total = 0
    for pid in (os.getpid(), SERVER_PID):
        if pid is None:
            continue
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return None
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                    total += int(stat.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue  # a thread that ended meanwhile
    return total


def _switches() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


class Clock:
    """Wall and CPU time of one turn, its context switches, and the server's own time from its
    `loopwire.timing` event."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        self.switches = _switches()
        self.queued = _queued_ns()
        self.server_ms: float | None = None

    def see(self, event: Any) -> None:
        if event.type == "loopwire.timing":
            self.server_ms = float(event.timings["total_ms"])
        elif event.type == "error":
            raise RuntimeError(f"server error: {event}")

    def done(self, bytes_sent: int) -> Turn:
        wall = (time.perf_counter() - self.wall) * 1000.0
        cpu = (time.process_time() - self.cpu) * 1000.0
        queued = _queued_ns()
        waited = None if queued is None or self.queued is None else (queued - self.queued) / 1e6
        return Turn(wall, cpu, self.server_ms, bytes_sent, _switches() - self.switches, waited)


async def run_http(client: openai.AsyncOpenAI, turns: int, size: int) -> list[Turn]:
    conversation, rows = Conversation(size), []
    for _ in range(turns):
        body = conversation.body(delta=False)
        clock = Clock()
        stream = await client.responses.create(**body, stream=True)
        async for event in stream:
            clock.see(event)
            if event.type == "response.completed":
                response = event.response
        rows.append(clock.done(len(json.dumps(body))))
        conversation.absorb(response)
    return rows


async def run_ws(client: openai.AsyncOpenAI, turns: int, size: int) -> list[Turn]:
    conversation, rows = Conversation(size), []
    async with client.responses.connect() as connection:
        for _ in range(turns):
            body = conversation.body(delta=True)
            clock = Clock()
            await connection.response.create(**body)
            async for event in connection:
                clock.see(event)
                if event.type == "response.completed":
                    break
            rows.append(clock.done(len(json.dumps({"type": "response.create", **body}))))
            conversation.absorb(event.response)
    return rows


def run_ws_sync(client: openai.OpenAI, turns: int, size: int) -> list[Turn]:
    conversation, rows = Conversation(size), []
    with client.responses.connect() as connection:
        for _ in range(turns):
            body = conversation.body(delta=True)
            clock = Clock()
            connection.response.create(**body)
            for event in connection:
                clock.see(event)
                if event.type == "response.completed":
                    break
            rows.append(clock.done(len(json.dumps({"type": "response.create", **body}))))
            conversation.absorb(event.response)
    return rows


def median(rows: list[Turn], field: Callable[[Turn], float | None]) -> float:
    values = [value for value in map(field, rows) if value is not None]
    return statistics.median(values) if values else float("nan")


def p90(rows: list[Turn]) -> float:
    walls = sorted(row.wall_ms for row in rows)
    return walls[min(len(walls) - 1, int(0.9 * len(walls)))]


def report(args: argparse.Namespace, http: list[Turn], ws: list[Turn], ws_sync: list[Turn]) -> None:
    print(
        f"\nAgent loop: {args.turns} tool-calling turns, {args.tool_output_bytes} B of tool output per turn, "
        "openai SDK (async client, streamed events), sim engine at zero latency\n"
    )
    print("| turn | HTTP ms | of which server ms | HTTP bytes sent | WebSocket ms | of which server ms "
          "| WebSocket bytes sent |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for number, (h, w) in enumerate(zip(http, ws, strict=True), 1):
        print(
            f"| {number} | {h.wall_ms:.2f} | {h.server_ms or 0:.2f} | {h.bytes_sent:,} "
            f"| {w.wall_ms:.2f} | {w.server_ms or 0:.2f} | {w.bytes_sent:,} |"
        )
    h_med, w_med = median(http, lambda t: t.wall_ms), median(ws, lambda t: t.wall_ms)
    h_bytes, w_bytes = sum(t.bytes_sent for t in http), sum(t.bytes_sent for t in ws)
    print(
        f"\nmedian turn: HTTP {h_med:.2f} ms, WebSocket {w_med:.2f} ms ({h_med / w_med:.1f}x); "
        f"bytes sent: HTTP {h_bytes:,}, WebSocket {w_bytes:,} ({h_bytes / w_bytes:.1f}x less over WebSocket)"
    )
    print(
        f"of which the server's work (loopwire.timing): HTTP {median(http, lambda t: t.server_ms):.2f} ms, "
        f"WebSocket {median(ws, lambda t: t.server_ms):.2f} ms; the SDK's own CPU: "
        f"HTTP {median(http, lambda t: t.client_cpu_ms):.2f} ms, "
        f"WebSocket {median(ws, lambda t: t.client_cpu_ms):.2f} ms;\nrunnable but waiting for a core, summed "
        f"over the client's and the server's threads: HTTP {median(http, lambda t: t.queued_ms):.2f} ms, "
        f"WebSocket {median(ws, lambda t: t.queued_ms):.2f} ms"
    )
    print(
        "Most of a turn here is the SDK, not the server: it transforms and validates every request it\n"
        "sends (the whole history over HTTP, so that cost grows turn by turn) and builds a pydantic object\n"
        "for every event it receives; on a busy machine, waiting for a core adds the rest."
    )
    s_med = median(ws_sync, lambda t: t.wall_ms)
    print(
        f"\nThe SDK's synchronous WebSocket client on the same turns: median {s_med:.2f} ms, p90 "
        f"{p90(ws_sync):.2f} ms (async client: {w_med:.2f} ms, p90 {p90(ws):.2f} ms).\n"
        "Its reader thread hands each frame to the calling thread: "
        f"{median(ws_sync, lambda t: t.switches):.0f} context switches a turn (async: "
        f"{median(ws, lambda t: t.switches):.0f}), each a chance to wait for a core.\n"
        "`loopwire bench --quick` below measures the transports with loopwire's own lean client."
    )


async def main_async(args: argparse.Namespace) -> None:
    client = openai.AsyncOpenAI(base_url=args.base_url, api_key="loopwire-demo")
    sync_client = openai.OpenAI(base_url=args.base_url, api_key="loopwire-demo")
    # warm both paths (connections, the SDK's lazily built models) so the table shows steady state
    await run_http(client, 2, args.tool_output_bytes)
    await run_ws(client, 2, args.tool_output_bytes)
    run_ws_sync(sync_client, 2, args.tool_output_bytes)
    http = await run_http(client, args.turns, args.tool_output_bytes)
    ws = await run_ws(client, args.turns, args.tool_output_bytes)
    ws_sync = run_ws_sync(sync_client, args.turns, args.tool_output_bytes)
    await client.close()
    sync_client.close()
    report(args, http, ws, ws_sync)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--tool-output-bytes", type=int, default=4000)
    parser.add_argument("--server-pid", type=int, help="the server's process, for its run-queue waits")
    args = parser.parse_args()
    global SERVER_PID
    SERVER_PID = args.server_pid
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
