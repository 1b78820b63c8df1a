"""`loopwire bench gateway --engine responses`: loopwire in front of a zero-latency Responses upstream,
over a 50-turn agent loop, alternating the order conversation by conversation:

  direct   the client talks WebSocket mode straight to the upstream: store=false, previous_response_id +
           the delta (the floor: what the same client pays without loopwire in between)
  ws       the same client and frames through loopwire (engine transport=ws: the lane's own upstream socket)
  ws-http  through a second loopwire with transport=http: each turn is an SSE POST upstream carrying the
           delta and previous_response_id (store=true upstream)

Why this upstream: it costs almost nothing and exactly the same for `direct` and `ws`, so `ws - direct` is
loopwire's own cost (a loopwire sim upstream adds ~0.5 ms of its own per turn and competes for the same
cores; `--upstream sim` runs against one anyway, for realism). CPU per turn is read from
/proc/PID/task/*/schedstat around each turn, for loopwire and for the upstream.

Owns this benchmark's loop and table; the upstream is loopwire.bench.upstreams.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from typing import Any

import uvloop

from .cpu import process_cpu_ns
from .processes import free_port, serving, stop_process, wait_http
from .table import Results, Sample, alternate, label, medians, windows
from .upstreams import MODEL
from .wire import COMPLETED, LeanSocket
from .workload import Conversation, base_body

TRANSPORTS = ["direct", "ws", "ws-http"]


class Bench:
    def __init__(self, args: argparse.Namespace, targets: dict[str, tuple[int, str]], upstream_pid: int):
        self.args = args
        self.targets = targets  # transport -> (pid whose CPU is "loopwire's", ws URL)
        self.upstream_pid = upstream_pid
        self.results: dict[str, Results] = {name: Results() for name in args.transports}

    async def conversation(self, name: str, seed: int, record: bool) -> int:
        pid, url = self.targets[name]
        conv = Conversation(seed=seed, output_bytes=self.args.output_bytes)
        socket = await LeanSocket.connect(url)
        try:
            for turn in range(1, self.args.turns + 1):
                frame = json.dumps(conv.create_event(base_body(store=False, model=MODEL))).encode()
                before = (process_cpu_ns(pid) or 0) if pid else 0, process_cpu_ns(self.upstream_pid) or 0
                start = time.perf_counter()
                data = await socket.turn(frame)
                elapsed = time.perf_counter() - start
                sample = Sample(
                    elapsed,
                    len(frame),
                    ((process_cpu_ns(pid) or 0) - before[0]) if pid else 0,
                    (process_cpu_ns(self.upstream_pid) or 0) - before[1],
                )
                if not data.startswith(COMPLETED):
                    raise RuntimeError(data[:500].decode())
                conv.absorb(json.loads(data)["response"])
                if record:
                    self.results[name].add(turn, sample)
        finally:
            socket.close()
        return len(json.dumps(conv.history))

    async def run(self) -> None:
        args = self.args
        await alternate(args.transports, args.conversations, args.warmup, self.results, self.conversation)


def report(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    early, late = windows(args.turns)
    print(
        f"\n{args.conversations} conversations x {args.turns} turns per transport, tool output "
        f"{args.output_bytes} B per turn, zero-latency Responses upstream ({args.upstream})\n"
    )
    print(
        f"| transport | p50 turns {label(early)} (ms) "
        f"| p50 turns {label(late)} (ms) | loopwire CPU/turn late (ms) "
        "| upstream CPU/turn late (ms) | frame up late (B) | history at the end (KiB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    summary: dict[str, Any] = {}
    for name, results in bench.results.items():
        row = medians(results, early, late)
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
                f"turns {label(late)}: {name} - direct = {overhead:.3f} ms "
                f"({name} / direct = {summary[name]['late_ms'] / summary['direct']['late_ms']:.2f}x)"
            )
    return summary


def run(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="loopwire-gateway-responses-"))
        if args.upstream == "fake":
            port = free_port()
            upstream = subprocess.Popen(
                [sys.executable, "-m", "loopwire.bench.upstreams", "responses", str(port)]
            )
            stack.callback(stop_process, upstream)
            wait_http(f"http://127.0.0.1:{port}/healthz", upstream)
            upstream_pid, upstream_base = upstream.pid, f"http://127.0.0.1:{port}"
        else:
            sim = stack.enter_context(serving("memory"))
            upstream_pid, upstream_base = sim.pid, sim.origin
        upstream_url = upstream_base + "/v1"
        targets: dict[str, tuple[int, str]] = {
            "direct": (0, upstream_base.replace("http", "ws") + "/v1/responses")
        }
        for name, transport in (("ws", "ws"), ("ws-http", "http")):
            if name not in args.transports:
                continue
            extra = [
                "--engine", "responses", "--upstream", upstream_url,
                "--engine-option", f"transport={transport}", *args.server_arg,
            ]  # fmt: skip
            server = stack.enter_context(serving(f"sqlite:{tmp}/{name}.db", extra))
            targets[name] = (server.pid, server.origin.replace("http", "ws") + "/v1/responses")
        bench = Bench(args, targets, upstream_pid)
        uvloop.run(bench.run())
    return report(bench, args)
