"""The per-turn benchmarks' common frame: conversations run side by side over every transport, their
per-turn samples by turn number, medians over turn windows, and the run's JSON summary.

Owns the order conversations run in and holding and summarising samples; must not measure or print one
benchmark's columns.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def windows(turns: int) -> tuple[range, range]:
    """The early turns (1-5) and the late ones (the last six), as the tables compare them."""
    return range(1, min(5, turns) + 1), range(max(1, turns - 5), turns + 1)


def label(window: range) -> str:
    return f"{window.start}-{window.stop - 1}"


@dataclass(frozen=True, slots=True)
class Sample:
    latency_s: float
    bytes_up: int
    server_cpu_ns: int
    """loopwire's CPU during the turn, all threads (/proc/PID/task/*/schedstat)."""
    upstream_cpu_ns: int = 0
    """The upstream's, for the gateway benchmarks."""


@dataclass
class Results:
    """One transport's samples by turn number, and the size each conversation's history reached."""

    turns: dict[int, list[Sample]] = field(default_factory=dict)
    history_bytes: list[int] = field(default_factory=list)

    def add(self, turn: int, sample: Sample) -> None:
        self.turns.setdefault(turn, []).append(sample)

    def window(self, turns: range) -> list[Sample]:
        return [sample for turn in turns for sample in self.turns.get(turn, [])]


def medians(results: Results, early: range, late: range) -> dict[str, float]:
    """One transport's row: median latency, CPU and bytes over the early and the late turns."""
    early_s, late_s = results.window(early), results.window(late)
    return {
        "early_ms": p50([s.latency_s for s in early_s]) * 1000,
        "late_ms": p50([s.latency_s for s in late_s]) * 1000,
        "cpu_early_ms": p50([s.server_cpu_ns / 1e6 for s in early_s]),
        "cpu_late_ms": p50([s.server_cpu_ns / 1e6 for s in late_s]),
        "upstream_cpu_late_ms": p50([s.upstream_cpu_ns / 1e6 for s in late_s]),
        "bytes_up_late": p50([float(s.bytes_up) for s in late_s]),
        "history_kib": p50([float(b) for b in results.history_bytes]) / 1024,
    }


async def alternate(
    transports: Sequence[str],
    conversations: int,
    warmup: int,
    results: dict[str, Results],
    conversation: Callable[[str, int, bool], Awaitable[int]],
) -> None:
    """Run `warmup` + `conversations` conversations over every transport, the order reversed every other
    time so that drift on a noisy machine hits all of them alike. `conversation(transport, seed, record)`
    returns the size its history reached; only recorded ones count."""
    total = conversations + warmup
    for index in range(total):
        record = index >= warmup
        for transport in transports if index % 2 == 0 else list(reversed(transports)):
            size = await conversation(transport, index, record)
            if record:
                results[transport].history_bytes.append(size)
        print(f"\r  conversation {index + 1}/{total}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def write_summary(path: Path | None, args: Any, summary: dict[str, Any]) -> None:
    """The run's arguments and summary as JSON, when --json asked for it."""
    if path is not None:
        arguments = {key: str(v) if isinstance(v, Path) else v for key, v in vars(args).items()}
        path.write_text(json.dumps({"args": arguments, "summary": summary}, indent=2))
