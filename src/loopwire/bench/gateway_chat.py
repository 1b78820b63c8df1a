"""`loopwire bench gateway --engine openai-chat`: loopwire in front of a zero-latency chat-completions
upstream, over a 50-turn agent loop, three ways alternating conversation by conversation:

  direct     the client talks chat completions straight to the upstream, the full history every turn
             (the floor: what a client in front of vLLM pays)
  ws         through loopwire, WebSocket mode (picows), store=false, previous_response_id + the delta
  http-full  through loopwire, HTTP + SSE (aiohttp), store=false, the whole conversation every turn
  ws-b, http-full-b  the same against a second loopwire started with --b-server-arg (A/B in one run)

Each turn answers the previous turn's tool call with --output-bytes of tool output, so the history grows to
about T x output-bytes. CPU per turn is read from /proc/PID/task/*/schedstat around each turn, for
loopwire and for the upstream. Overhead = ws - direct at the late turns.

Owns this benchmark's loop and table; the upstream is loopwire.bench.upstreams.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import time
from typing import Any

import aiohttp
import uvloop

from .cpu import process_cpu_ns
from .processes import free_port, serving, stop_process, wait_http
from .table import Results, Sample, alternate, label, medians, windows
from .upstreams import MODEL
from .wire import COMPLETED, LeanSocket, sse_turn
from .workload import INSTRUCTIONS, TASK, TOOLS, Conversation, base_body, tool_output

TRANSPORTS = ["direct", "ws", "http-full"]
B_TRANSPORTS = ["ws-b", "http-full-b"]
"""The same two, against a second loopwire configured with --b-server-arg (an A/B in one run)."""


def chat_tools() -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": t["name"], "description": t["description"], "parameters": t["parameters"]},
        }
        for t in TOOLS
    ]


class ChatConversation:
    """The direct client's view: chat messages, as a client of vLLM keeps them."""

    def __init__(self, seed: int, output_bytes: int) -> None:
        self.rng = random.Random(seed)
        self.output_bytes = output_bytes
        self.messages: list[dict[str, Any]] = [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": TASK},
        ]

    def absorb(self, stream: bytes) -> None:
        calls: list[dict[str, Any]] = []
        for line in stream.split(b"\n"):
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            for choice in chunk["choices"]:
                calls.extend(choice["delta"].get("tool_calls", ()))
        if not calls:
            raise RuntimeError(f"expected a tool call, got {stream[:300]!r}")
        self.messages.append({"role": "assistant", "content": "", "tool_calls": calls})
        for call in calls:
            output = tool_output(self.output_bytes, self.rng)
            self.messages.append({"role": "tool", "tool_call_id": call["id"], "content": output})


class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        servers: dict[str, tuple[int, str]],
        upstream_pid: int,
        upstream: str,
    ):
        self.args = args
        self.servers = servers  # "a" / "b" -> (pid, base URL)
        self.server_pid = servers["a"][0]
        self.upstream_pid = upstream_pid
        self.upstream = upstream
        self.results: dict[str, Results] = {name: Results() for name in args.transports}

    def cpu(self) -> tuple[int, int]:
        return process_cpu_ns(self.server_pid) or 0, process_cpu_ns(self.upstream_pid) or 0

    def sample(self, elapsed: float, bytes_up: int, before: tuple[int, int]) -> Sample:
        after = self.cpu()
        return Sample(elapsed, bytes_up, after[0] - before[0], after[1] - before[1])

    def body(self) -> dict[str, Any]:
        return base_body(store=False, model=MODEL)

    async def direct(self, session: aiohttp.ClientSession, seed: int, record: bool) -> int:
        conv = ChatConversation(seed, self.args.output_bytes)
        tools = chat_tools()
        payload = b""
        for turn in range(1, self.args.turns + 1):
            body = {
                "model": MODEL,
                "messages": conv.messages,
                "stream": True,
                "stream_options": {"include_usage": True},
                "tools": tools,
                "tool_choice": "required",
                "parallel_tool_calls": True,
            }
            payload = json.dumps(body).encode()
            before = self.cpu()
            start = time.perf_counter()
            async with session.post(
                self.upstream + "/chat/completions",
                data=payload,
                headers={"content-type": "application/json"},
            ) as reply:
                if reply.status != 200:
                    raise RuntimeError(await reply.text())
                stream = await reply.read()
            elapsed = time.perf_counter() - start
            sample = self.sample(elapsed, len(payload), before)
            conv.absorb(stream)
            if record:
                self.results["direct"].add(turn, sample)
        return len(payload)

    async def ws(self, name: str, seed: int, record: bool) -> int:
        self.server_pid, base = self.servers["b" if name.endswith("-b") else "a"]
        conv = Conversation(seed=seed, output_bytes=self.args.output_bytes)
        socket = await LeanSocket.connect(base.replace("http://", "ws://") + "/v1/responses")
        try:
            for turn in range(1, self.args.turns + 1):
                frame = json.dumps(conv.create_event(self.body())).encode()
                before = self.cpu()
                start = time.perf_counter()
                data = await socket.turn(frame)
                elapsed = time.perf_counter() - start
                sample = self.sample(elapsed, len(frame), before)
                if not data.startswith(COMPLETED):
                    raise RuntimeError(data.decode())
                conv.absorb(json.loads(data)["response"])
                if record:
                    self.results[name].add(turn, sample)
        finally:
            socket.close()
        return len(json.dumps(conv.history))

    async def http_full(self, session: aiohttp.ClientSession, name: str, seed: int, record: bool) -> int:
        self.server_pid, base = self.servers["b" if name.endswith("-b") else "a"]
        conv = Conversation(seed=seed, output_bytes=self.args.output_bytes)
        for turn in range(1, self.args.turns + 1):
            payload = json.dumps({**self.body(), "stream": True, "input": conv.history}).encode()
            before = self.cpu()
            start = time.perf_counter()
            completed = await sse_turn(session, base + "/v1/responses", payload)
            elapsed = time.perf_counter() - start
            sample = self.sample(elapsed, len(payload), before)
            conv.absorb(json.loads(completed)["response"])
            if record:
                self.results[name].add(turn, sample)
        return len(json.dumps(conv.history))

    async def run(self) -> None:
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as session,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as direct_session,
        ):

            async def conversation(transport: str, seed: int, record: bool) -> int:
                if transport == "direct":
                    return await self.direct(direct_session, seed, record)
                if transport.startswith("ws"):
                    return await self.ws(transport, seed, record)
                return await self.http_full(session, transport, seed, record)

            args = self.args
            await alternate(args.transports, args.conversations, args.warmup, self.results, conversation)


def report(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    early, late = windows(args.turns)
    print(
        f"\n{args.conversations} conversations x {args.turns} turns per transport, tool output "
        f"{args.output_bytes} B per turn, zero-latency chat-completions upstream\n"
    )
    early_label, late_label = label(early), label(late)
    print(
        f"| transport | p50 turns {early_label} (ms) | p50 turns {late_label} (ms) "
        "| late / early | loopwire CPU/turn early (ms) | loopwire CPU/turn late (ms) "
        "| upstream CPU/turn late (ms) | history at the end (KiB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    summary: dict[str, Any] = {}
    for name, results in bench.results.items():
        row = medians(results, early, late)
        summary[name] = row
        print(
            f"| {name} | {row['early_ms']:.3f} | {row['late_ms']:.3f} "
            f"| {row['late_ms'] / row['early_ms']:.2f} "
            f"| {row['cpu_early_ms']:.3f} | {row['cpu_late_ms']:.3f} | {row['upstream_cpu_late_ms']:.3f} "
            f"| {row['history_kib']:.0f} |"
        )
    if "ws" in summary and "direct" in summary:
        overhead = summary["ws"]["late_ms"] - summary["direct"]["late_ms"]
        summary["overhead_ms"] = overhead
        print(
            f"\nturns {late_label}: gateway overhead ws - direct = {overhead:.3f} ms "
            f"(ws / direct = {summary['ws']['late_ms'] / summary['direct']['late_ms']:.2f}x)"
        )
    if "http-full" in summary and "direct" in summary:
        overhead = summary["http-full"]["late_ms"] - summary["direct"]["late_ms"]
        print(f"turns {late_label}: http-full - direct = {overhead:.3f} ms")
    if "ws-b" in summary and "direct" in summary:
        overhead = summary["ws-b"]["late_ms"] - summary["direct"]["late_ms"]
        summary["overhead_b_ms"] = overhead
        print(f"turns {late_label}: gateway overhead ws-b - direct = {overhead:.3f} ms")
    return summary


def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    upstream_url = f"http://127.0.0.1:{port}/v1"
    upstream = subprocess.Popen([sys.executable, "-m", "loopwire.bench.upstreams", "chat", str(port)])
    try:
        wait_http(f"http://127.0.0.1:{port}/", upstream)
        extra = ["--engine", "openai-chat", "--upstream", upstream_url, *args.server_arg]
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="loopwire-gateway-"))
            server = stack.enter_context(serving(f"sqlite:{tmp}/a.db", extra))
            servers = {"a": (server.pid, server.origin)}
            if args.b_server_arg is not None:
                b_extra = ["--engine", "openai-chat", "--upstream", upstream_url]
                b_extra += [arg for arg in args.b_server_arg if arg]
                server_b = stack.enter_context(serving(f"sqlite:{tmp}/b.db", b_extra))
                servers["b"] = (server_b.pid, server_b.origin)
                args.transports = [*args.transports, *(t for t in B_TRANSPORTS if t not in args.transports)]
            bench = Bench(args, servers, upstream.pid, upstream_url)
            uvloop.run(bench.run())
    finally:
        stop_process(upstream)
    return report(bench, args)
