"""A whole benchmark run: servers per speed, emulators per profile, every rollout of the plan in order.

Owns the order of effects (start, measure, record, stop) and the JSON lines file; must not aggregate.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from .grid import SPEEDS, VARIANTS, Cell, Plan, Run
from .measure import Target, measure_rollout
from .processes import LinkProcess, link_emulator, loopwire_server
from .progress import Progress
from .samples import RolloutSample, TurnSample, write_jsonl

WARMUP_CALLS = 5


@dataclass(slots=True)
class Campaign:
    rollouts: list[RolloutSample] = field(default_factory=list)
    turns: list[TurnSample] = field(default_factory=list)


async def run_plan(plan: Plan, jsonl: Path | None = None, progress: Progress | None = None) -> Campaign:
    """Run every rollout of `plan`; each one's records are appended to `jsonl` as soon as it ends, so an
    interrupted run keeps what it measured."""
    campaign = Campaign()
    progress = progress if progress is not None else Progress(plan.rollouts)
    with tempfile.TemporaryDirectory(prefix="loopwire-bench-") as tmp:
        for speed, runs in groupby(plan.runs(), key=lambda run: run[0].speed):
            await _run_speed(speed, list(runs), plan.file_kb, Path(tmp), campaign, jsonl, progress)
    return campaign


async def _run_speed(
    speed: str,
    runs: list[Run],
    file_kb: int,
    workdir: Path,
    campaign: Campaign,
    jsonl: Path | None,
    progress: Progress,
) -> None:
    """One server for the speed; one emulator per profile, started when first needed (loopback: none).
    A first, unrecorded rollout warms the engine's prefix cache with what every rollout shares (the
    instructions, tools and task), as any server that has served one agent before has it; otherwise
    whichever variant ran first would pay for it alone."""
    with loopwire_server(SPEEDS[speed], workdir) as (server, port), contextlib.ExitStack() as links:
        emulators: dict[str, LinkProcess] = {}
        direct = Target(f"http://127.0.0.1:{port}/v1", server.pid)
        warmup = Cell("loopback", speed, WARMUP_CALLS)
        await measure_rollout(direct, warmup, VARIANTS["ws"], 0, 0, 0, "warm-up", file_kb)
        for cell, repeat, names in runs:
            target = direct
            if cell.profile != "loopback":
                if cell.profile not in emulators:
                    emulators[cell.profile] = links.enter_context(link_emulator(port, cell.profile))
                link = emulators[cell.profile]
                target = Target(f"http://127.0.0.1:{link.port}/v1", server.pid, link)
            for order, name in enumerate(names):
                label = f"{cell.label}/r{repeat}/{name}"
                rollout, turns = await measure_rollout(
                    target, cell, VARIANTS[name], repeat, order, repeat, label, file_kb
                )
                campaign.rollouts.append(rollout)
                campaign.turns.extend(turns)
                if jsonl is not None:
                    write_jsonl(jsonl, [rollout, *turns])
                progress.step(f"{cell.label} {name}")
