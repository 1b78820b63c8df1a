"""Where one WebSocket-mode turn spends its server time, stage by stage, in process (no sockets).

Runs the same stages the server runs for a turn (decode the frame, validate and plan, open the turn, the sim
engine, events and their encoding, the commit) over a conversation that grows by --output-bytes per turn,
and prints the median microseconds of each stage at the early and late turns. The transports add framing,
the event loop and the kernel on top: bench/turn_latency.py measures those end to end.

    python bench/turn_stages.py --turns 50 --conversations 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import itertools

from turn_latency import Conversation, base_body

from loopwire.engines.base import EngineDelta, Finished
from loopwire.engines.sim.engine import SimEngine
from loopwire.protocol.events import encode
from loopwire.protocol.request import decode_ws_event
from loopwire.server.runner import merge_ready
from loopwire.session.cache import CachedResponse
from loopwire.session.connection import ConnectionState
from loopwire.session.limits import Limits
from loopwire.session.plan import plan_turn, validate_fields
from loopwire.session.turn import Turn

STAGES = ["decode", "plan", "open", "engine", "events", "commit", "total"]


async def run(args: argparse.Namespace) -> dict[str, dict[int, list[float]]]:
    engine = SimEngine()
    limits = Limits()
    times: dict[str, dict[int, list[float]]] = {stage: {} for stage in STAGES}
    for index in range(args.conversations):
        conn: ConnectionState[object] = ConnectionState(limits, opened_at=0.0)
        conv = Conversation(index, args.output_bytes)
        for turn_number in range(1, args.turns + 1):
            body = {"type": "response.create", **base_body(store=False), "input": conv.delta}
            if conv.previous_id is not None:
                body["previous_response_id"] = conv.previous_id
            frame = json.dumps(body).encode()
            marks = [time.perf_counter()]
            request = decode_ws_event(frame)
            marks.append(time.perf_counter())
            validate_fields(request, limits, websocket=True)
            parent = conn.lookup(request.previous_response_id) if request.previous_response_id else None
            plan = plan_turn(
                request, parent=parent, lane="", owner="", response_id=f"resp_{index}_{turn_number}", now=0
            )
            marks.append(time.perf_counter())
            turn = Turn(plan.response, None)
            wire = [encode(event) for event in turn.opening()]
            marks.append(time.perf_counter())
            batches: list[list[EngineDelta]] = [batch async for batch in engine.stream(plan.engine_request)]
            marks.append(time.perf_counter())
            finished: Finished | None = None
            for batch in batches:
                for delta in merge_ready(batch):
                    if isinstance(delta, Finished):
                        finished = delta
                    else:
                        wire += [encode(event) for event in turn.feed(delta)]
            assert finished is not None
            closing, response = turn.finish(finished, 0)
            wire += [encode(event) for event in closing]
            encoded = encode(response)
            marks.append(time.perf_counter())
            conn.commit(
                CachedResponse(response.id, "", "", plan.context.extend(turn.output), finished.render, False)
            )
            wire.append(encode(turn.terminal(encoded)))
            marks.append(time.perf_counter())
            for stage, (start, end) in zip(STAGES, itertools.pairwise(marks), strict=False):
                times[stage].setdefault(turn_number, []).append(end - start)
            times["total"].setdefault(turn_number, []).append(marks[-1] - marks[0])
            conv.absorb(json.loads(wire[-1])["response"])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--output-bytes", type=int, default=6000)
    args = parser.parse_args()
    times = asyncio.run(run(args))
    windows = {
        "turns 1-5": range(1, 6),
        f"turns {args.turns - 5}-{args.turns}": range(args.turns - 5, args.turns + 1),
    }
    print(
        f"\nmedian server time per stage (us), {args.conversations} conversations x {args.turns} turns, "
        f"{args.output_bytes} B tool output per turn, in process\n"
    )
    print("| stage | " + " | ".join(windows) + " |")
    print("|---|" + "---:|" * len(windows))
    for stage in STAGES:
        cells = []
        for window in windows.values():
            values = [value for turn in window for value in times[stage].get(turn, [])]
            cells.append(f"{statistics.median(values) * 1e6:.0f}")
        print(f"| {stage} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
