"""Gateway overhead of `--engine openai-chat`: a 50-turn agent loop against a zero-latency upstream.

Starts a zero-latency chat-completions upstream in its own process (a raw asyncio HTTP/1.1 server: it
reads every request body whole, then answers with a short streamed completion holding one tool call), and
`loopwire serve --engine openai-chat --upstream URL`, then runs N conversations of T turns three ways,
alternating the order conversation by conversation:

  direct     the client talks chat completions straight to the upstream, the full history every turn
             (the floor: what a client in front of vLLM pays)
  ws         through loopwire, WebSocket mode (picows), store=false, previous_response_id + the delta
  http-full  through loopwire, HTTP + SSE (aiohttp), store=false, the whole conversation every turn
  ws-b, http-full-b  the same against a second loopwire started with --b-server-arg (A/B in one run)

Each turn answers the previous turn's tool call with --output-bytes of tool output, so the history grows to
about T x output-bytes. Server CPU per turn is read from /proc/PID/task/*/schedstat around each turn, for
loopwire and for the upstream. Overhead = ws - direct at the late turns.

    python bench/gateway.py --turns 50 --conversations 10 --output-bytes 6000
    python bench/gateway.py --b-server-arg=--engine-option --b-server-arg=message_cache_bytes=0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
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
from turn_latency import INSTRUCTIONS, TOOLS, Conversation, server_cpu_ns, tool_output

TRANSPORTS = ["direct", "ws", "http-full"]
B_TRANSPORTS = ["ws-b", "http-full-b"]
"""The same two, against a second loopwire configured with --b-server-arg (an A/B in one run)."""
MODEL = "bench-model"


# -- the zero-latency upstream (runs in its own process: `gateway.py --upstream-port P`) ----------------


def completion_body(number: int) -> bytes:
    """A short streamed chat completion: role, one whole tool call, finish, usage, [DONE]."""
    chunk_id = f"chatcmpl-{number}"
    head = {"id": chunk_id, "object": "chat.completion.chunk", "created": 1747300000, "model": MODEL}
    call = {
        "index": 0,
        "id": f"call_{number}",
        "type": "function",
        "function": {"name": "read_file", "arguments": '{"path": "src/parser.py"}'},
    }
    chunks: list[dict[str, Any]] = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {**head, "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]},
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {
            **head,
            "choices": [],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 12, "total_tokens": 1012},
        },
    ]
    events = b"".join(b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks)
    return events + b"data: [DONE]\n\n"


class UpstreamProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive with Content-Length bodies only (what aiohttp sends for a bytes body)."""

    counter = 0

    def __init__(self) -> None:
        self.transport: Any = None
        self.buffer = bytearray()
        self.need: int | None = None  # body bytes still expected after the headers, once parsed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's TCPTransport is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.need is None:  # reading headers
                self.buffer += view
                view = view[len(view) :]
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                length = -1
                for line in bytes(self.buffer[:end]).split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length < 0:
                    self.transport.write(b"HTTP/1.1 411 Length Required\r\ncontent-length: 0\r\n\r\n")
                    self.transport.close()
                    return
                view = memoryview(bytes(self.buffer[end + 4 :]))  # body bytes that came with the headers
                self.buffer.clear()
                self.need = length
            taken = min(self.need, len(view))  # body bytes are counted, not kept
            self.need -= taken
            view = view[taken:]
            if self.need:
                return
            self.need = None  # the whole body was read: answer at once
            UpstreamProtocol.counter += 1
            body = completion_body(UpstreamProtocol.counter)
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )


def serve_upstream(port: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(UpstreamProtocol, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# -- the benchmark ------------------------------------------------------------------------------------


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
            {"role": "user", "content": "The test test_parse fails. Find and fix it."},
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


@dataclass
class Sample:
    latency_s: float
    bytes_up: int
    loopwire_cpu_ns: int
    upstream_cpu_ns: int


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
        self.results: dict[str, Results[Sample]] = {name: Results() for name in args.transports}

    def cpu(self) -> tuple[int, int]:
        return server_cpu_ns(self.server_pid), server_cpu_ns(self.upstream_pid)

    def sample(self, elapsed: float, bytes_up: int, before: tuple[int, int]) -> Sample:
        after = self.cpu()
        return Sample(elapsed, bytes_up, after[0] - before[0], after[1] - before[1])

    def body(self) -> dict[str, Any]:
        return {
            "model": MODEL,
            "instructions": INSTRUCTIONS,
            "tools": TOOLS,
            "tool_choice": "required",
            "store": False,
        }

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
        loop = asyncio.get_running_loop()
        url = base.replace("http://", "ws://") + "/v1/responses"
        ws, listener = await picows.ws_connect(TerminalListener, url, max_frame_size=64 * 1024 * 1024)
        assert isinstance(listener, TerminalListener)
        try:
            for turn in range(1, self.args.turns + 1):
                body = {"type": "response.create", **self.body(), "input": conv.delta}
                if conv.previous_id is not None:
                    body["previous_response_id"] = conv.previous_id
                frame = json.dumps(body).encode()
                listener.done = loop.create_future()
                before = self.cpu()
                start = time.perf_counter()
                ws.send(picows.WSMsgType.TEXT, frame)
                data = await listener.done
                elapsed = time.perf_counter() - start
                sample = self.sample(elapsed, len(frame), before)
                if not data.startswith(TERMINAL[0]):
                    raise RuntimeError(data.decode())
                conv.absorb(json.loads(data)["response"])
                if record:
                    self.results[name].add(turn, sample)
        finally:
            ws.disconnect()
        return len(json.dumps(conv.history))

    async def http_full(self, session: aiohttp.ClientSession, name: str, seed: int, record: bool) -> int:
        self.server_pid, base = self.servers["b" if name.endswith("-b") else "a"]
        conv = Conversation(seed=seed, output_bytes=self.args.output_bytes)
        for turn in range(1, self.args.turns + 1):
            payload = json.dumps({**self.body(), "stream": True, "input": conv.history}).encode()
            before = self.cpu()
            start = time.perf_counter()
            async with session.post(
                base + "/v1/responses", data=payload, headers={"content-type": "application/json"}
            ) as reply:
                if reply.status != 200:
                    raise RuntimeError(await reply.text())
                completed = None
                async for line in reply.content:
                    if line.startswith(b'data: {"type":"response.completed"'):
                        completed = line[6:]
            elapsed = time.perf_counter() - start
            sample = self.sample(elapsed, len(payload), before)
            if completed is None:
                raise RuntimeError("the stream ended without response.completed")
            conv.absorb(json.loads(completed)["response"])
            if record:
                self.results[name].add(turn, sample)
        return len(json.dumps(conv.history))

    async def run(self) -> None:
        total = self.args.conversations + self.args.warmup
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as session,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as direct_session,
        ):
            for index in range(total):
                record = index >= self.args.warmup
                order = self.args.transports if index % 2 == 0 else list(reversed(self.args.transports))
                for transport in order:
                    if transport == "direct":
                        size = await self.direct(direct_session, index, record)
                    elif transport.startswith("ws"):
                        size = await self.ws(transport, index, record)
                    else:
                        size = await self.http_full(session, transport, index, record)
                    if record:
                        self.results[transport].history_bytes.append(size)
                print(f"\r  conversation {index + 1}/{total}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)


def report(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    last = args.turns
    early, late = range(1, min(5, last) + 1), range(max(1, last - 5), last + 1)
    print(
        f"\n{args.conversations} conversations x {args.turns} turns per transport, tool output "
        f"{args.output_bytes} B per turn, zero-latency chat-completions upstream\n"
    )
    early_label, late_label = f"{early.start}-{early.stop - 1}", f"{late.start}-{late.stop - 1}"
    print(
        f"| transport | p50 turns {early_label} (ms) | p50 turns {late_label} (ms) "
        "| late / early | loopwire CPU/turn early (ms) | loopwire CPU/turn late (ms) "
        "| upstream CPU/turn late (ms) | history at the end (KiB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    summary: dict[str, Any] = {}
    for name, results in bench.results.items():
        early_s, late_s = results.window(early), results.window(late)
        row = {
            "early_ms": p50([s.latency_s for s in early_s]) * 1000,
            "late_ms": p50([s.latency_s for s in late_s]) * 1000,
            "cpu_early_ms": p50([s.loopwire_cpu_ns / 1e6 for s in early_s]),
            "cpu_late_ms": p50([s.loopwire_cpu_ns / 1e6 for s in late_s]),
            "upstream_cpu_late_ms": p50([s.upstream_cpu_ns / 1e6 for s in late_s]),
            "history_kib": p50([float(b) for b in results.history_bytes]) / 1024,
        }
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
            f"\nturns {late.start}-{late.stop - 1}: gateway overhead ws - direct = {overhead:.3f} ms "
            f"(ws / direct = {summary['ws']['late_ms'] / summary['direct']['late_ms']:.2f}x)"
        )
    if "http-full" in summary and "direct" in summary:
        overhead = summary["http-full"]["late_ms"] - summary["direct"]["late_ms"]
        print(f"turns {late.start}-{late.stop - 1}: http-full - direct = {overhead:.3f} ms")
    if "ws-b" in summary and "direct" in summary:
        overhead = summary["ws-b"]["late_ms"] - summary["direct"]["late_ms"]
        summary["overhead_b_ms"] = overhead
        print(f"turns {late.start}-{late.stop - 1}: gateway overhead ws-b - direct = {overhead:.3f} ms")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output-bytes", type=int, default=6000)
    parser.add_argument("--transports", nargs="+", default=TRANSPORTS, choices=TRANSPORTS + B_TRANSPORTS)
    parser.add_argument("--server-arg", action="append", default=[], help="extra argument for loopwire serve")
    parser.add_argument(
        "--b-server-arg",
        action="append",
        default=None,
        help="start a second loopwire with these extra arguments (repeatable, may be empty: --b-server-arg=) "
        "and run ws-b and http-full-b against it, alternating with the rest: an A/B in one run",
    )
    parser.add_argument("--json", type=Path, help="also write the summary here as JSON")
    parser.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)  # run as the upstream process
    args = parser.parse_args()
    if args.upstream_port is not None:
        serve_upstream(args.upstream_port)
        return

    port = free_port()
    upstream_url = f"http://127.0.0.1:{port}/v1"
    upstream = subprocess.Popen([sys.executable, __file__, "--upstream-port", str(port)])
    try:
        wait_ready(f"http://127.0.0.1:{port}/", upstream)
        extra = ["--engine", "openai-chat", "--upstream", upstream_url, *args.server_arg]
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="loopwire-gateway-"))
            server, base = stack.enter_context(loopwire_server(f"sqlite:{tmp}/a.db", extra))
            servers = {"a": (server.pid, base)}
            if args.b_server_arg is not None:
                b_extra = ["--engine", "openai-chat", "--upstream", upstream_url]
                b_extra += [arg for arg in args.b_server_arg if arg]
                server_b, base_b = stack.enter_context(loopwire_server(f"sqlite:{tmp}/b.db", b_extra))
                servers["b"] = (server_b.pid, base_b)
                args.transports = [*args.transports, *(t for t in B_TRANSPORTS if t not in args.transports)]
            bench = Bench(args, servers, upstream.pid, upstream_url)
            uvloop.run(bench.run())
    finally:
        upstream.terminate()
        upstream.wait(10)
    write_summary(args.json, args, report(bench, args))


if __name__ == "__main__":
    main()
