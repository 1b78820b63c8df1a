"""One rollout of the coding agent over one variant, measured turn by turn.

Owns running the agent on a fresh fixture repository and turning what it saw (client metrics, the
server's timing events, the server's CPU clock) into samples; must not start servers or choose variants.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..agent.fixture import write_fixture
from ..agent.forced import CALLS_LABEL, DEFAULT_CALL_TOKENS
from ..agent.loop import AgentConfig, AgentRun, TurnRecord, run_agent
from ..agent.tools import ToolSettings
from ..client import SessionOptions
from ..netem import PROFILES
from .cpu import process_cpu_ns
from .grid import Cell, Variant
from .processes import LinkProcess
from .samples import RolloutSample, TurnSample

EXPLORE_OVERHEAD_CALLS = 5
"""The scripted policy makes `explore + 5` tool calls (run tests, read, fix, run tests, answer)."""


@dataclass(slots=True)
class CpuObserver:
    """Reads the server's CPU clock at the start and end of every model turn."""

    pid: int
    turn_cpu_ms: dict[int, float | None] = field(default_factory=dict)
    _started: int | None = None

    def turn_started(self, number: int) -> None:
        self._started = process_cpu_ns(self.pid)

    def turn_finished(self, record: TurnRecord) -> None:
        ended = process_cpu_ns(self.pid)
        started = self._started
        self.turn_cpu_ms[record.number] = (
            None if started is None or ended is None else (ended - started) / 1e6
        )


@dataclass(frozen=True, slots=True)
class RealModel:
    """A rollout on a real model: the policy forces each call (agent/forced.py), greedy decoding, short
    tool outputs (so a CPU gets through it), at most `max_turns` turns."""

    model: str = "smollm2"
    call_tokens: int = DEFAULT_CALL_TOKENS
    tool_output_chars: int = 600
    max_turns: int = 400


@dataclass(frozen=True, slots=True)
class Target:
    """Where the rollout's client connects (through the link emulator, or straight for loopback)."""

    base_url: str
    server_pid: int
    link: LinkProcess | None = None
    """The emulator in between, whose totals give the bytes that really crossed the link."""


async def measure_rollout(
    target: Target,
    cell: Cell,
    variant: Variant,
    repeat: int,
    order: int,
    seed: int,
    label: str,
    file_kb: int = 0,
    real: RealModel | None = None,
    note: str | None = None,
) -> tuple[RolloutSample, list[TurnSample]]:
    """`label` names the rollout and, unless `note` is given, makes its task text unique, so the engine's
    prefix cache (shared by the whole server, like a real one's) cannot serve it from another variant's
    identical history: every rollout starts from what is really shared, the instructions and tools.
    `real`: the policy forces the calls of a real model (the task note then must not name the variant,
    so that every transport's history is the same)."""
    observer = CpuObserver(target.server_pid)
    config = AgentConfig(
        base_url=target.base_url,
        transport=variant.transport,
        store=variant.store_flag,
        explore=cell.calls - EXPLORE_OVERHEAD_CALLS,
        seed=seed,
        batch=variant.batch,
        session=SessionOptions(http_keepalive=variant.keepalive, ws_deflate=variant.deflate),
        task_note=f"(benchmark rollout {label if note is None else note})",
    )
    if real is not None:
        config = replace(
            config,
            model=real.model,
            forced_calls=True,
            call_tokens=real.call_tokens,
            max_turns=real.max_turns,
            tools=ToolSettings(max_output=real.tool_output_chars),
        )
    before = target.link.totals() if target.link is not None else None
    with tempfile.TemporaryDirectory(prefix="loopwire-bench-repo-") as tmp:
        repo = Path(tmp) / "repo"
        fixture = write_fixture(repo, seed, padding_bytes=file_kb * 1024)
        run = await run_agent(repo, fixture.fix, config, observer)
    wire: tuple[int, int] | None = None
    if target.link is not None and before is not None:
        after = target.link.totals()
        wire = (after[0] - before[0], after[1] - before[1])
    turns = [_turn_sample(label, cell, variant, repeat, turn, observer) for turn in run.turns]
    history = len(json.dumps(run.conversation, separators=(",", ":")).encode())
    rollout = _rollout_sample(label, cell, variant, repeat, order, run, turns, wire, history, file_kb)
    if real is not None:
        rollout = replace(rollout, calls_label=CALLS_LABEL)
    return rollout, turns


def output_digest(output: list[Any]) -> str:
    """What the model said, without the ids the server makes up (call ids differ on every run): equal
    digests on every transport mean the same greedy tokens, hence the same history."""
    said = [
        {key: value for key, value in item.items() if key not in ("id", "call_id", "status")}
        for item in output
        if isinstance(item, dict)
    ]
    return hashlib.sha256(json.dumps(said, sort_keys=True).encode()).hexdigest()[:16]


def _first(timings: dict[str, float], *keys: str) -> float | None:
    """The first of `keys` the timings have (the sim's latency model, else a real engine's own time)."""
    for key in keys:
        value = _number(timings, key)
        if value is not None:
            return value
    return None


def _number(timings: dict[str, float], key: str) -> float | None:
    value = timings.get(key)
    return None if value is None else float(value)


def _turn_sample(
    rollout: str, cell: Cell, variant: Variant, repeat: int, record: TurnRecord, observer: CpuObserver
) -> TurnSample:
    metrics, usage = record.metrics, record.usage
    timings = metrics.server_timings
    details: Any = usage.get("input_tokens_details") or {}
    rendered = _number(timings, "engine_rendered_tokens")
    reused = _number(timings, "engine_reused_tokens")
    return TurnSample(
        rollout=rollout,
        variant=variant.name,
        profile=cell.profile,
        speed=cell.speed,
        calls=cell.calls,
        repeat=repeat,
        turn=record.number,
        ttft_ms=None if metrics.ttft_s is None else metrics.ttft_s * 1000.0,
        latency_ms=metrics.latency_s * 1000.0,
        bytes_up=metrics.bytes_up,
        bytes_down=metrics.bytes_down,
        sent_delta=metrics.sent_delta,
        input_tokens=int(usage.get("input_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
        rendered_tokens=None if rendered is None else int(rendered),
        reused_tokens=None if reused is None else int(reused),
        model_ms=_first(timings, "engine_model_ms", "engine_total_ms"),
        engine_ttft_ms=_number(timings, "engine_ttft_ms"),
        output_tokens=int(usage.get("output_tokens") or 0),
        output_digest=output_digest(record.output),
        server_ms=_number(timings, "total_ms"),
        server_cpu_ms=observer.turn_cpu_ms.get(record.number),
        tool_ms=record.tool_time_s * 1000.0,
    )


def _sum_or_none(values: list[float | None]) -> float | None:
    return None if any(value is None for value in values) else sum(v for v in values if v is not None)


def _rollout_sample(
    rollout: str,
    cell: Cell,
    variant: Variant,
    repeat: int,
    order: int,
    run: AgentRun,
    turns: list[TurnSample],
    wire: tuple[int, int] | None,
    history_bytes: int,
    file_kb: int,
) -> RolloutSample:
    rtt_s = PROFILES[cell.profile].rtt_ms / 1000.0
    model_s = sum(turn.model_ms or 0.0 for turn in turns) / 1000.0
    rendered = _sum_or_none([turn.rendered_tokens for turn in turns])
    reused = _sum_or_none([turn.reused_tokens for turn in turns])
    cpu = _sum_or_none([turn.server_cpu_ms for turn in turns])
    return RolloutSample(
        rollout=rollout,
        variant=variant.name,
        transport=variant.transport,
        profile=cell.profile,
        speed=cell.speed,
        calls=cell.calls,
        repeat=repeat,
        order=order,
        turns=run.turn_count,
        tool_calls=run.tool_calls,
        finished=run.finished,
        repo_hash=run.repo_hash,
        e2e_s=run.elapsed_s,
        floor_s=model_s + run.tool_time_s + rtt_s * run.turn_count,
        model_s=model_s,
        tool_s=run.tool_time_s,
        rtt_s=rtt_s,
        bytes_up=sum(turn.bytes_up for turn in turns),
        bytes_down=sum(turn.bytes_down for turn in turns),
        wire_up=None if wire is None else wire[0],
        wire_down=None if wire is None else wire[1],
        rendered_tokens=None if rendered is None else int(rendered),
        reused_tokens=None if reused is None else int(reused),
        server_cpu_s=None if cpu is None else cpu / 1000.0,
        reconnects=sum(turn.metrics.reconnects for turn in run.turns),
        interrupted=sum(turn.interrupted for turn in run.turns),
        history_bytes=history_bytes,
        file_kb=file_kb,
    )
