"""Gateway overhead of `--engine responses`: a 50-turn agent loop against a zero-latency Responses upstream.

Starts a zero-latency Responses upstream in its own process (aiohttp: WebSocket mode and HTTP + SSE on one
port; stateless, it accepts any previous_response_id and answers every create at once with one short
function call, the same seven events a real server sends), and `loopwire serve --engine responses
--upstream URL`, then runs N conversations of T turns, alternating the order conversation by conversation:

  direct   the client talks WebSocket mode straight to the upstream: store=false, previous_response_id +
           the delta (the floor: what the same client pays without loopwire in between)
  ws       the same client and frames through loopwire (engine transport=ws: the lane's own upstream socket)
  ws-http  through a second loopwire with transport=http: each turn is an SSE POST upstream carrying the
           delta and previous_response_id (store=true upstream)

Why this upstream: it costs almost nothing and exactly the same for `direct` and `ws`, so `ws - direct` is
loopwire's own cost (a loopwire sim upstream adds ~0.5 ms of its own per turn and competes for the same
cores; `--upstream sim` runs against one anyway, for realism). Each turn answers the previous call with
--output-bytes of tool output, so the history grows to about T x output-bytes. CPU per turn is read from
/proc/PID/task/*/schedstat around each turn, for loopwire and for the upstream.

    python bench/gateway_responses.py --turns 50 --conversations 6 --output-bytes 6000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from turn_latency import INSTRUCTIONS, TOOLS, Conversation, server_cpu_ns

TRANSPORTS = ["direct", "ws", "ws-http"]
MODEL = "bench-model"


# -- the zero-latency upstream (runs in its own process: `gateway_responses.py --upstream-port P`) -------


def _dump(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


def turn_events(number: int) -> list[str]:
    """One function call turn as a Responses server streams it."""
    response_id = f"resp_up{number}"
    head = {"id": response_id, "object": "response", "created_at": 1747300000, "model": MODEL}
    call = {
        "id": f"fc_up{number}",
        "type": "function_call",
        "status": "in_progress",
        "call_id": f"call_up{number}",
        "name": "read_file",
        "arguments": "",
    }
    arguments = '{"path": "src/parser.py"}'
    done = {**call, "status": "completed", "arguments": arguments}
    usage = {
        "input_tokens": 1000,
        "input_tokens_details": {"cached_tokens": 900},
        "output_tokens": 12,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 1012,
    }
    running = {**head, "status": "in_progress", "output": [], "error": None}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": running},
        {"type": "response.in_progress", "response": running},
        {"type": "response.output_item.added", "output_index": 0, "item": call},
        {
            "type": "response.function_call_arguments.delta",
            "item_id": call["id"],
            "output_index": 0,
            "delta": arguments,
        },
        {
            "type": "response.function_call_arguments.done",
            "item_id": call["id"],
            "output_index": 0,
            "arguments": arguments,
        },
        {"type": "response.output_item.done", "output_index": 0, "item": done},
        {
            "type": "response.completed",
            "response": {**head, "status": "completed", "output": [done], "error": None, "usage": usage},
        },
    ]
    return [_dump({**event, "sequence_number": index}) for index, event in enumerate(events)]


def serve_upstream(port: int) -> None:
    from aiohttp import WSMsgType, web

    counter = 0

    async def create(request: web.Request) -> web.StreamResponse:
        nonlocal counter
        await request.read()
        counter += 1
        body = "".join(f"event: {json.loads(e)['type']}\ndata: {e}\n\n" for e in turn_events(counter))
        return web.Response(body=body.encode(), content_type="text/event-stream")

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        nonlocal counter
        ws = web.WebSocketResponse(max_msg_size=0, compress=False)
        await ws.prepare(request)
        async for message in ws:
            if message.type != WSMsgType.TEXT or '"response.create"' not in message.data[:40]:
                continue
            counter += 1
            for event in turn_events(counter):
                await ws.send_str(event)
        return ws

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post("/v1/responses", create)
    app.router.add_get("/v1/responses", websocket)
    app.router.add_get("/healthz", healthz)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, handle_signals=True)


# -- the benchmark ------------------------------------------------------------------------------------


@dataclass
class Sample:
    latency_s: float
    bytes_up: int
    loopwire_cpu_ns: int
    upstream_cpu_ns: int


class Bench:
    def __init__(self, args: argparse.Namespace, targets: dict[str, tuple[int, str]], upstream_pid: int):
        self.args = args
        self.targets = targets  # transport -> (pid whose CPU is "loopwire's", ws URL)
        self.upstream_pid = upstream_pid
        self.results: dict[str, Results[Sample]] = {name: Results() for name in args.transports}

    async def conversation(self, name: str, seed: int, record: bool) -> int:
        pid, url = self.targets[name]
        conv = Conversation(seed=seed, output_bytes=self.args.output_bytes)
        loop = asyncio.get_running_loop()
        ws, listener = await picows.ws_connect(TerminalListener, url, max_frame_size=64 * 1024 * 1024)
        assert isinstance(listener, TerminalListener)
        base = {
            "model": MODEL,
            "instructions": INSTRUCTIONS,
            "tools": TOOLS,
            "tool_choice": "required",
            "store": False,
        }
        try:
            for turn in range(1, self.args.turns + 1):
                body = {"type": "response.create", **base, "input": conv.delta}
                if conv.previous_id is not None:
                    body["previous_response_id"] = conv.previous_id
                frame = json.dumps(body).encode()
                listener.done = loop.create_future()
                cpu = (server_cpu_ns(pid) if pid else 0, server_cpu_ns(self.upstream_pid))
                start = time.perf_counter()
                ws.send(picows.WSMsgType.TEXT, frame)
                data = await listener.done
                elapsed = time.perf_counter() - start
                sample = Sample(
                    elapsed,
                    len(frame),
                    (server_cpu_ns(pid) - cpu[0]) if pid else 0,
                    server_cpu_ns(self.upstream_pid) - cpu[1],
                )
                if not data.startswith(TERMINAL[0]):
                    raise RuntimeError(data[:500].decode())
                conv.absorb(json.loads(data)["response"])
                if record:
                    self.results[name].add(turn, sample)
        finally:
            ws.disconnect()
        return len(json.dumps(conv.history))

    async def run(self) -> None:
        total = self.args.conversations + self.args.warmup
        for index in range(total):
            record = index >= self.args.warmup
            order = self.args.transports if index % 2 == 0 else list(reversed(self.args.transports))
            for transport in order:
                size = await self.conversation(transport, index, record)
                if record:
                    self.results[transport].history_bytes.append(size)
            print(f"\r  conversation {index + 1}/{total}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)


def report(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    last = args.turns
    early, late = range(1, min(5, last) + 1), range(max(1, last - 5), last + 1)
    print(
        f"\n{args.conversations} conversations x {args.turns} turns per transport, tool output "
        f"{args.output_bytes} B per turn, zero-latency Responses upstream ({args.upstream})\n"
    )
    print(
        f"| transport | p50 turns {early.start}-{early.stop - 1} (ms) "
        f"| p50 turns {late.start}-{late.stop - 1} (ms) | loopwire CPU/turn late (ms) "
        "| upstream CPU/turn late (ms) | frame up late (B) | history at the end (KiB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    summary: dict[str, Any] = {}
    for name, results in bench.results.items():
        early_s, late_s = results.window(early), results.window(late)
        row = {
            "early_ms": p50([s.latency_s for s in early_s]) * 1000,
            "late_ms": p50([s.latency_s for s in late_s]) * 1000,
            "cpu_late_ms": p50([s.loopwire_cpu_ns / 1e6 for s in late_s]),
            "upstream_cpu_late_ms": p50([s.upstream_cpu_ns / 1e6 for s in late_s]),
            "bytes_up_late": p50([float(s.bytes_up) for s in late_s]),
            "history_kib": p50([float(b) for b in results.history_bytes]) / 1024,
        }
        summary[name] = row
        print(
            f"| {name} | {row['early_ms']:.3f} | {row['late_ms']:.3f} | {row['cpu_late_ms']:.3f} "
            f"| {row['upstream_cpu_late_ms']:.3f} | {row['bytes_up_late']:.0f} | {row['history_kib']:.0f} |"
        )
    for name in ("ws", "ws-http"):
        if name in summary and "direct" in summary:
            overhead = summary[name]["late_ms"] - summary["direct"]["late_ms"]
            summary[f"overhead_{name}_ms"] = overhead
            print(
                f"turns {late.start}-{late.stop - 1}: {name} - direct = {overhead:.3f} ms "
                f"({name} / direct = {summary[name]['late_ms'] / summary['direct']['late_ms']:.2f}x)"
            )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--conversations", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output-bytes", type=int, default=6000)
    parser.add_argument("--transports", nargs="+", default=TRANSPORTS, choices=TRANSPORTS)
    parser.add_argument("--upstream", choices=["fake", "sim"], default="fake")
    parser.add_argument("--server-arg", action="append", default=[], help="extra argument for loopwire serve")
    parser.add_argument("--json", type=Path, help="also write the summary here as JSON")
    parser.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)  # run as the upstream process
    args = parser.parse_args()
    if args.upstream_port is not None:
        serve_upstream(args.upstream_port)
        return

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="loopwire-gateway-responses-"))
        if args.upstream == "fake":
            port = free_port()
            upstream = subprocess.Popen([sys.executable, __file__, "--upstream-port", str(port)])
            stack.callback(upstream.wait, 10)
            stack.callback(upstream.terminate)
            wait_ready(f"http://127.0.0.1:{port}/healthz", upstream)
            upstream_pid, upstream_base = upstream.pid, f"http://127.0.0.1:{port}"
        else:
            sim, upstream_base = stack.enter_context(loopwire_server("memory"))
            upstream_pid = sim.pid
        upstream_url = upstream_base + "/v1"
        targets: dict[str, tuple[int, str]] = {
            "direct": (0, upstream_base.replace("http", "ws") + "/v1/responses")
        }
        for name, transport in (("ws", "ws"), ("ws-http", "http")):
            if name not in args.transports:
                continue
            extra = [
                "--engine",
                "responses",
                "--upstream",
                upstream_url,
                "--engine-option",
                f"transport={transport}",
                *args.server_arg,
            ]
            server, base = stack.enter_context(loopwire_server(f"sqlite:{tmp}/{name}.db", extra))
            targets[name] = (server.pid, base.replace("http", "ws") + "/v1/responses")
        bench = Bench(args, targets, upstream_pid)
        uvloop.run(bench.run())
    write_summary(args.json, args, report(bench, args))


if __name__ == "__main__":
    main()
