"""Per-turn samples by turn number, their medians over turn windows, and the run's JSON summary.

Owns holding and summarising samples; must not measure or print tables of one benchmark's columns.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

Sample = TypeVar("Sample")


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def windows(turns: int) -> tuple[range, range]:
    """The early turns (1-5) and the late ones (the last six), as the tables compare them."""
    return range(1, min(5, turns) + 1), range(max(1, turns - 5), turns + 1)


def label(window: range) -> str:
    return f"{window.start}-{window.stop - 1}"


@dataclass
class Results(Generic[Sample]):
    """One transport's samples by turn number, and the size each conversation's history reached."""

    turns: dict[int, list[Sample]] = field(default_factory=dict)
    history_bytes: list[int] = field(default_factory=list)

    def add(self, turn: int, sample: Sample) -> None:
        self.turns.setdefault(turn, []).append(sample)

    def window(self, turns: range) -> list[Sample]:
        return [sample for turn in turns for sample in self.turns.get(turn, [])]


def write_summary(path: Path | None, args: Any, summary: dict[str, Any]) -> None:
    """The run's arguments and summary as JSON, when --json asked for it."""
    if path is not None:
        arguments = {key: str(v) if isinstance(v, Path) else v for key, v in vars(args).items()}
        path.write_text(json.dumps({"args": arguments, "summary": summary}, indent=2))
