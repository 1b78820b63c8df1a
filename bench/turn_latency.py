"""Per-turn latency and server CPU of a growing agent conversation, WebSocket mode vs HTTP, side by side.

Starts `loopwire serve` (zero-latency sim engine) as a subprocess, runs N conversations of T turns over each
transport (alternating, so drift on this noisy machine hits all of them alike), and prints p50 turn latency
and server CPU per turn at the start and end of the conversation. Each turn answers the previous turn's tool
call with a tool output of --output-bytes, so the history grows to about T x output-bytes.

    python bench/turn_latency.py --turns 50 --conversations 20 --output-bytes 6000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import picows
import uvloop

TOOLS = [
    {
        "type": "function",
        "name": name,
        "description": desc,
        "parameters": {
            "type": "object",
            "properties": props,
            "required": list(props),
            "additionalProperties": False,
        },
    }
    for name, desc, props in [
        ("read_file", "Read a file of the repository.", {"path": {"type": "string"}}),
        ("grep", "Search the repository.", {"pattern": {"type": "string"}, "path": {"type": "string"}}),
        ("list_files", "List files under a directory.", {"path": {"type": "string"}}),
        ("write_file", "Write a file.", {"path": {"type": "string"}, "content": {"type": "string"}}),
        ("run_tests", "Run the test suite.", {"selector": {"type": "string"}}),
    ]
]
INSTRUCTIONS = "You are a careful coding agent. Use the tools to find and fix the failing test. " * 20
WORDS = ["def", "class", "return", "import", "self", "value", "result", "assert", "error", "file", "path", "line", "test", "config"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def tool_output(size: int, rng: random.Random) -> str:
    lines = []
    total = 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(10))
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)[:size]


def server_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Samples:
    latency: dict[int, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    bytes_up: dict[int, list[int]] = field(default_factory=dict)


def base_body(store: bool) -> dict[str, Any]:
    return {
        "model": "sim",
        "instructions": INSTRUCTIONS,
        "tools": TOOLS,
        "tool_choice": "required",
        "store": store,
    }


def first_input() -> list[dict[str, Any]]:
    return [
        {"type": "message", "role": "user", "content": "The test test_parse fails. Find and fix the bug."}
    ]


class Conversation:
    """The client's view: the whole history, and what to send next."""

    def __init__(self, seed: int, output_bytes: int) -> None:
        self.rng = random.Random(seed)
        self.output_bytes = output_bytes
        self.history: list[dict[str, Any]] = first_input()
        self.delta: list[dict[str, Any]] = list(self.history)
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


class TerminalListener(picows.WSListener):  # type: ignore[misc]
    """Resolves `done` with the payload of the turn's terminal event (or an error event)."""

    def __init__(self) -> None:
        self.done: asyncio.Future[bytes] | None = None

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type != picows.WSMsgType.TEXT or self.done is None:
            return
        head = bytes(frame.get_payload_as_memoryview()[:32])
        if head.startswith(
            (b'{"type":"response.completed"', b'{"type":"error"', b'{"type":"response.failed"')
        ):
            self.done.set_result(frame.get_payload_as_bytes())


async def ws_conversation(url: str, conv: Conversation, turns: int, on_turn: Any) -> None:
    """WebSocket mode with picows, a lean client, so the numbers measure the server rather than the client."""
    loop = asyncio.get_running_loop()
    transport, listener = await picows.ws_connect(TerminalListener, url, max_frame_size=64 * 1024 * 1024)
    try:
        for turn in range(1, turns + 1):
            body = {"type": "response.create", **base_body(store=False), "input": conv.delta}
            if conv.previous_id is not None:
                body["previous_response_id"] = conv.previous_id
            frame = json.dumps(body).encode()
            listener.done = loop.create_future()
            start = time.perf_counter()
            transport.send(picows.WSMsgType.TEXT, frame)
            data = await listener.done
            elapsed = time.perf_counter() - start
            if not data.startswith(b'{"type":"response.completed"'):
                raise RuntimeError(data.decode())
            conv.absorb(json.loads(data)["response"])
            on_turn(turn, elapsed, len(frame))
    finally:
        transport.disconnect()


async def http_conversation(
    session: aiohttp.ClientSession, url: str, conv: Conversation, turns: int, on_turn: Any, chained: bool
) -> None:
    for turn in range(1, turns + 1):
        body = {**base_body(store=chained), "stream": True}
        if chained:
            body["input"] = conv.delta
            if conv.previous_id is not None:
                body["previous_response_id"] = conv.previous_id
        else:
            body["input"] = conv.history
        payload = json.dumps(body).encode()
        start = time.perf_counter()
        async with session.post(url, data=payload, headers={"content-type": "application/json"}) as reply:
            if reply.status != 200:
                raise RuntimeError(await reply.text())
            completed = None
            async for line in reply.content:
                if line.startswith(b'data: {"type":"response.completed"'):
                    completed = line[6:]
        elapsed = time.perf_counter() - start
        assert completed is not None
        conv.absorb(json.loads(completed)["response"])
        on_turn(turn, elapsed, len(payload))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_ready(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(base + "/healthz") as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("server did not start")


WINDOWS = {"turns 1-5": range(1, 6), "turns 45-50": range(45, 51)}


async def run(args: argparse.Namespace) -> dict[str, Samples]:
    port = free_port()
    store_dir = tempfile.mkdtemp(prefix="loopwire-bench-")
    if args.pin and len(os.sched_getaffinity(0)) >= 2:
        # One core each: the client's work does not steal the server's core mid-turn.
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[0]})
        pin = ["taskset", "-c", str(cores[1])]
    else:
        pin = []
    server = subprocess.Popen(
        [
            *pin,
            sys.executable,
            "-m",
            "loopwire",
            "serve",
            "--port",
            str(port),
            "--store",
            f"sqlite:{store_dir}/bench.db",
            "--store-write",
            args.store_write,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    results = {name: Samples() for name in args.transports}
    try:
        await wait_ready(base)
        connector = aiohttp.TCPConnector(limit=4)
        async with aiohttp.ClientSession(connector=connector) as session:
            for index in range(args.conversations + args.warmup):
                for name in args.transports:
                    samples = results[name]
                    conv = Conversation(seed=index, output_bytes=args.output_bytes)
                    windows_cpu: dict[int, float] = {}

                    def on_turn(
                        turn: int,
                        elapsed: float,
                        sent: int,
                        samples: Samples = samples,
                        windows_cpu: dict[int, float] = windows_cpu,
                    ) -> None:
                        if index < args.warmup:
                            return
                        samples.latency.setdefault(turn, []).append(elapsed)
                        samples.bytes_up.setdefault(turn, []).append(sent)
                        windows_cpu[turn] = server_cpu_seconds(server.pid)

                    cpu_start = server_cpu_seconds(server.pid)
                    windows_cpu[0] = cpu_start
                    if name == "ws":
                        await ws_conversation(
                            f"ws://127.0.0.1:{port}/v1/responses", conv, args.turns, on_turn
                        )
                    else:
                        await http_conversation(
                            session,
                            base + "/v1/responses",
                            conv,
                            args.turns,
                            on_turn,
                            chained=name == "http-chained",
                        )
                    if index >= args.warmup:
                        for label, window in WINDOWS.items():
                            first, last = window.start, window.stop - 1
                            if last in windows_cpu and first - 1 in windows_cpu:
                                used = windows_cpu[last] - windows_cpu[first - 1]
                                samples.cpu.setdefault(label, []).append(used / len(window))
                        history = sum(len(json.dumps(item)) for item in conv.history)
                        samples.cpu.setdefault("history_bytes", []).append(history)
    finally:
        server.terminate()
        server.wait(10)
    return results


def ms(value: float) -> str:
    return f"{value * 1000:.3f}"


def report(results: dict[str, Samples], args: argparse.Namespace) -> None:
    print(
        f"\n{args.conversations} conversations x {args.turns} turns per transport, "
        f"tool output {args.output_bytes} B/turn, sim engine at zero latency, store-write {args.store_write}"
    )
    any_samples = next(iter(results.values()))
    history = statistics.median(any_samples.cpu.get("history_bytes", [0]))
    print(f"history at the last turn: ~{history / 1024:.0f} KiB\n")
    print(
        "| transport | p50 turn 1 (ms) | p50 turn 50 (ms) | p50 turns 1-5 (ms) | p50 turns 45-50 (ms) "
        "| 45-50 / 1-5 | server CPU/turn 1-5 (ms) | server CPU/turn 45-50 (ms) | bytes up turn 50 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    last = args.turns
    late_window = range(max(1, last - 5), last + 1)
    for name, samples in results.items():
        early = [x for t in range(1, 6) for x in samples.latency.get(t, [])]
        late = [x for t in late_window for x in samples.latency.get(t, [])]
        p_early, p_late = statistics.median(early), statistics.median(late)
        cpu_early = statistics.median(samples.cpu.get("turns 1-5", [float("nan")]))
        cpu_late = statistics.median(samples.cpu.get("turns 45-50", [float("nan")]))
        print(
            f"| {name} | {ms(statistics.median(samples.latency[1]))} | "
            f"{ms(statistics.median(samples.latency[last]))} | {ms(p_early)} | {ms(p_late)} | "
            f"{p_late / p_early:.2f} | {ms(cpu_early)} | {ms(cpu_late)} | "
            f"{int(statistics.median(samples.bytes_up[last]))} |"
        )
    if "ws" in results:
        ws_late = statistics.median([x for t in late_window for x in results["ws"].latency.get(t, [])])
        for name, samples in results.items():
            if name == "ws":
                continue
            other = statistics.median([x for t in late_window for x in samples.latency.get(t, [])])
            print(f"\nturns 45-50: {name} / ws latency ratio = {other / ws_late:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output-bytes", type=int, default=6000)
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="pin client and server to different cores (default: off; on these VMs a "
        "cross-core wake-up costs more than sharing a core)",
    )
    parser.add_argument("--store-write", default="behind", choices=["behind", "through"])
    parser.add_argument(
        "--transports",
        nargs="+",
        default=["ws", "http-full", "http-chained"],
        choices=["ws", "http-full", "http-chained"],
    )
    args = parser.parse_args()
    if args.turns < 50:
        global WINDOWS
        WINDOWS = {"turns 1-5": range(1, 6), "turns 45-50": range(max(1, args.turns - 5), args.turns + 1)}
    results = uvloop.run(run(args))
    report(results, args)


if __name__ == "__main__":
    main()
