"""`loopwire bench stages`: where one WebSocket-mode turn spends its server time, stage by stage.

Drives the server's own `run_turn` in process (no sockets) with the real sim engine at zero latency, the
real request decoder and a sink that encodes each burst of events as the WebSocket transport does, over
conversations that grow by --output-bytes a turn. The stages come from the turn itself: the
`loopwire.timing` event's marks (decode, resolve + plan) and the instants its bursts reach the sink
(opening events, the engine's events, the commit before the terminal event, the terminal burst). What a
real socket adds on top (uvicorn's frame parsing, the event-loop task, framing, the kernel) is what
`loopwire bench turns` measures end to end.

Owns this measurement only; must not re-implement any step of a turn.

    loopwire bench stages --turns 50 --conversations 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.connection import DEFAULT_LANE, ConnectionState
from ..engines.sim.engine import SimEngine
from ..protocol.errors import ProtocolError
from ..protocol.events import Event, encode
from ..protocol.request import decode_ws_event
from ..server.runner import run_turn
from ..server.state import ServerSettings, ServerState
from ..store.memory import MemoryStore
from .table import label, p50, windows, write_summary
from .workload import Conversation, base_body

STAGES = {
    "decode": "decode the frame",
    "plan": "validate, resolve the parent, plan",
    "open": "open the turn (created, in_progress), encoded",
    "engine": "sim engine and its events (render the delta, generate a call), encoded",
    "commit": "the response, the lane cache (and store) before the terminal event",
    "terminal": "timing and terminal events, encoded",
    "total": "total",
}
TIMING_EVENT = b'{"type":"loopwire.timing"'


@dataclass(slots=True)
class Burst:
    arrived: float
    encoded: float
    payloads: list[bytes]


@dataclass(slots=True)
class RecordingSink:
    """Encodes each burst as the WebSocket transport's sink does and notes when it arrived and when its
    encoding was done."""

    bursts: list[Burst] = field(default_factory=list)
    refused: ProtocolError | None = None

    async def error(self, error: ProtocolError) -> None:
        self.refused = error

    async def events(self, events: list[Event]) -> None:
        arrived = time.perf_counter()
        payloads = [encode(event) for event in events]
        self.bursts.append(Burst(arrived, time.perf_counter(), payloads))


def stage_times(received: float, sink: RecordingSink) -> dict[str, float]:
    """Seconds per stage of one turn, from its bursts and its timing event."""
    if sink.refused is not None:
        raise RuntimeError(f"the turn was refused: {sink.refused}")
    last = sink.bursts[-1]
    timing = next(p for p in last.payloads if p.startswith(TIMING_EVENT))
    marks = json.loads(timing)["timings"]
    started = received + marks["decode_ms"] / 1000.0
    planned = started + marks["resolve_plan_ms"] / 1000.0
    opened = sink.bursts[0].encoded
    streamed = sink.bursts[-2].encoded if len(sink.bursts) > 2 else opened
    return {
        "decode": started - received,
        "plan": planned - started,
        "open": opened - planned,
        "engine": streamed - opened,
        "commit": last.arrived - streamed,
        "terminal": last.encoded - last.arrived,
        "total": last.encoded - received,
    }


async def run(args: argparse.Namespace) -> dict[str, dict[int, list[float]]]:
    state = ServerState(SimEngine(), MemoryStore(), settings=ServerSettings(timing_events=True))
    times: dict[str, dict[int, list[float]]] = {stage: {} for stage in STAGES}
    try:
        for index in range(args.conversations + args.warmup):
            conn: ConnectionState[Any] = ConnectionState(state.limits, opened_at=time.monotonic())
            conv = Conversation(index, args.output_bytes)
            for turn in range(1, args.turns + 1):
                frame = json.dumps(conv.create_event(base_body(store=args.store))).encode()
                sink = RecordingSink()
                received = time.perf_counter()
                request = decode_ws_event(frame)
                await run_turn(state, conn, DEFAULT_LANE, request, sink, websocket=True, received=received)
                measured = stage_times(received, sink)
                conv.absorb(json.loads(sink.bursts[-1].payloads[-1])["response"])
                if index >= args.warmup:
                    for stage, seconds in measured.items():
                        times[stage].setdefault(turn, []).append(seconds)
            total = args.conversations + args.warmup
            print(f"\r  conversation {index + 1}/{total}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    finally:
        await state.aclose()
    return times


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loopwire bench stages", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--output-bytes", type=int, default=6000)
    parser.add_argument("--store", action="store_true", help="store=true (into an in-memory store)")
    parser.add_argument("--json", type=Path, help="also write the medians here as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    times = asyncio.run(run(args))
    early, late = windows(args.turns)
    print(
        f"\nmedian server time per stage (us), {args.conversations} conversations x {args.turns} turns, "
        f"{args.output_bytes} B tool output per turn, store={str(args.store).lower()}, run_turn in process\n"
    )
    print(f"| stage | turns {label(early)} | turns {label(late)} |")
    print("|---|---:|---:|")
    summary: dict[str, Any] = {}
    for stage, text in STAGES.items():
        cells = [p50([s for n in window for s in times[stage].get(n, [])]) * 1e6 for window in (early, late)]
        summary[stage] = {"early_us": cells[0], "late_us": cells[1]}
        name = f"**{text}**" if stage == "total" else text
        print(f"| {name} | {cells[0]:.0f} | {cells[1]:.0f} |")
    write_summary(args.json, args, summary)
    return 0
