"""Reading a benchmark run: medians per cell and variant, ratios against WebSocket mode, markdown tables.

Owns aggregation and formatting; must not measure. Every ratio compares rollouts of the same run.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..netem import PROFILES
from .samples import RolloutSample, TurnSample

BASELINE = "ws"
LATE_TURNS = 5
"""Turn latency is also reported over each rollout's last turns, where the history is largest."""


def median(values: Iterable[float]) -> float:
    listed = list(values)
    return statistics.median(listed) if listed else float("nan")


@dataclass(frozen=True, slots=True)
class CellKey:
    profile: str
    speed: str
    calls: int

    @property
    def label(self) -> str:
        return f"{self.profile} / {self.speed} tok/s / {self.calls} calls"


@dataclass(frozen=True, slots=True)
class Row:
    """One variant in one cell: medians over its repeats."""

    cell: CellKey
    variant: str
    rollouts: int
    e2e_s: float
    floor_s: float
    turns: float
    ttft_ms: float
    latency_ms: float
    late_latency_ms: float
    bytes_up: float
    bytes_down: float
    wire_up: float
    wire_down: float
    server_cpu_ms_per_turn: float
    rendered_tokens: float
    reused_tokens: float
    cached_tokens: float
    history_bytes: float
    all_finished: bool

    @property
    def overhead_s(self) -> float:
        return self.e2e_s - self.floor_s


def cell_of(sample: RolloutSample | TurnSample) -> CellKey:
    return CellKey(sample.profile, sample.speed, sample.calls)


def turns_by_rollout(turns: Iterable[TurnSample]) -> dict[str, list[TurnSample]]:
    grouped: dict[str, list[TurnSample]] = defaultdict(list)
    for turn in turns:
        grouped[turn.rollout].append(turn)
    return grouped


def aggregate(rollouts: Sequence[RolloutSample], turns: Sequence[TurnSample]) -> list[Row]:
    by_rollout = turns_by_rollout(turns)
    groups: dict[tuple[CellKey, str], list[RolloutSample]] = defaultdict(list)
    for rollout in rollouts:
        groups[(cell_of(rollout), rollout.variant)].append(rollout)
    rows = []
    for (cell, variant), members in groups.items():
        member_turns = [turn for member in members for turn in by_rollout[member.rollout]]
        late = [
            turn.latency_ms
            for member in members
            for turn in by_rollout[member.rollout]
            if turn.turn > member.turns - LATE_TURNS
        ]
        cpu = [turn.server_cpu_ms for turn in member_turns if turn.server_cpu_ms is not None]
        rows.append(
            Row(
                cell=cell,
                variant=variant,
                rollouts=len(members),
                e2e_s=median(m.e2e_s for m in members),
                floor_s=median(m.floor_s for m in members),
                turns=median(m.turns for m in members),
                ttft_ms=median(t.ttft_ms for t in member_turns if t.ttft_ms is not None),
                latency_ms=median(t.latency_ms for t in member_turns),
                late_latency_ms=median(late),
                bytes_up=median(m.bytes_up for m in members),
                bytes_down=median(m.bytes_down for m in members),
                wire_up=median(m.wire_up for m in members if m.wire_up is not None),
                wire_down=median(m.wire_down for m in members if m.wire_down is not None),
                server_cpu_ms_per_turn=median(cpu),
                rendered_tokens=median(m.rendered_tokens or 0 for m in members),
                reused_tokens=median(m.reused_tokens or 0 for m in members),
                cached_tokens=median(sum(t.cached_tokens for t in by_rollout[m.rollout]) for m in members),
                history_bytes=median(m.history_bytes for m in members if m.history_bytes is not None),
                all_finished=all(m.finished for m in members),
            )
        )
    rows.sort(
        key=lambda row: (
            _speed_rank(row.cell.speed),
            _profile_rank(row.cell.profile),
            row.cell.calls,
            row.variant,
        )
    )
    return rows


def _speed_rank(speed: str) -> float:
    """Slowest engine first; "instant" (no latency model) last."""
    try:
        return float(speed)
    except ValueError:
        return float("inf")


def _profile_rank(profile: str) -> int:
    order = list(PROFILES)
    return order.index(profile) if profile in order else len(order)


def _baseline(rows: Sequence[Row]) -> dict[CellKey, Row]:
    return {row.cell: row for row in rows if row.variant == BASELINE}


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 else "-"


def _kb(value: float) -> str:
    return "-" if value != value else f"{value / 1024:,.0f}"  # NaN: not measured


def detail_table(rows: Sequence[Row]) -> str:
    """Every variant of every cell. Ratios are the variant's median end-to-end time over ws's."""
    base = _baseline(rows)
    lines = [
        "| cell | variant | e2e s | vs ws | floor s | overhead s | turns | history KiB | TTFT p50 ms "
        "| turn p50 ms | last-5 p50 ms | KiB up | KiB down | wire KiB up | wire KiB down "
        "| server CPU ms/turn | tokens rendered | render reused | KV cached |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ws = base.get(row.cell)
        flag = "" if row.all_finished else " (unfinished)"
        lines.append(
            f"| {row.cell.label} | {row.variant}{flag} | {row.e2e_s:.3f} | "
            f"{_ratio(row.e2e_s, ws.e2e_s) if ws else '-'} | {row.floor_s:.3f} | {row.overhead_s:.3f} | "
            f"{row.turns:.0f} | {_kb(row.history_bytes)} | {row.ttft_ms:.1f} | {row.latency_ms:.1f} | "
            f"{row.late_latency_ms:.1f} | "
            f"{_kb(row.bytes_up)} | {_kb(row.bytes_down)} | {_kb(row.wire_up)} | {_kb(row.wire_down)} | "
            f"{row.server_cpu_ms_per_turn:.2f} | "
            f"{row.rendered_tokens:,.0f} | {row.reused_tokens:,.0f} | {row.cached_tokens:,.0f} |"
        )
    return "\n".join(lines)


def summary_table(rows: Sequence[Row]) -> str:
    """One line per cell: the three transports' end-to-end medians, the floor, and the ratios."""
    cells: dict[CellKey, dict[str, Row]] = defaultdict(dict)
    for row in rows:
        cells[row.cell][row.variant] = row
    lines = [
        "| cell | history KiB | http-full s | http-chained s | ws s | floor s | http-full / ws "
        "| http-chained / ws | ws over floor | KiB up http-full / chained / ws |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell, variants in cells.items():
        ws, full, chained = variants.get("ws"), variants.get("http-full"), variants.get("http-chained")
        if ws is None:
            continue

        def seconds(row: Row | None) -> str:
            return "-" if row is None else f"{row.e2e_s:.3f}"

        def up(row: Row | None) -> str:
            return "-" if row is None else _kb(row.bytes_up)

        lines.append(
            f"| {cell.label} | {_kb(ws.history_bytes)} | {seconds(full)} | {seconds(chained)} | "
            f"{ws.e2e_s:.3f} | {ws.floor_s:.3f} | "
            f"{_ratio(full.e2e_s, ws.e2e_s) if full else '-'} | "
            f"{_ratio(chained.e2e_s, ws.e2e_s) if chained else '-'} | "
            f"+{ws.overhead_s:.3f} s ({_ratio(ws.e2e_s, ws.floor_s)}) | "
            f"{up(full)} / {up(chained)} / {up(ws)} |"
        )
    return "\n".join(lines)


def report(rows: Sequence[Row]) -> str:
    return (
        "End to end per rollout (median over repeats), the floor (model time + tool time + one RTT per "
        "turn), and the ratios:\n\n"
        + summary_table(rows)
        + "\n\nEvery variant:\n\n"
        + detail_table(rows)
        + "\n"
    )
