"""PNG plots of a benchmark run: turn latency and bytes up by turn number, end-to-end time per profile.

Owns drawing with matplotlib (headless Agg backend); must not measure or aggregate beyond medians.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from ..netem import PROFILES
from .grid import CORE_VARIANTS
from .report import BASELINE, CellKey, Row, median
from .samples import TurnSample

VARIANT_ORDER = (
    "http-full",
    "http-full-close",
    "http-full-batch",
    "http-chained",
    "ws",
    "ws-stored",
    "ws-deflate",
    "ws-batch",
)


def _pyplot() -> ModuleType:
    """matplotlib's pyplot on the headless backend (imported late: only `loopwire bench` needs it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _engine(speed: str) -> str:
    """A sim speed preset as "N tok/s"; a real engine's label (e.g. smollm2-local) as it is."""
    return f"{speed} tok/s" if speed.isdigit() or speed == "instant" else speed


def _focus_cells(turns: Sequence[TurnSample]) -> list[CellKey]:
    """The cells with the longest rollouts at the most common speed, one per profile."""
    if not turns:
        return []
    speeds: dict[str, int] = defaultdict(int)
    for turn in turns:
        speeds[turn.speed] += 1
    speed = "1000" if "1000" in speeds else max(speeds, key=lambda name: speeds[name])
    calls = max(turn.calls for turn in turns if turn.speed == speed)
    present = {turn.profile for turn in turns if turn.speed == speed and turn.calls == calls}
    return [CellKey(profile, speed, calls) for profile in PROFILES if profile in present]


def _by_turn(
    turns: Sequence[TurnSample], cell: CellKey, field: str
) -> dict[str, tuple[list[int], list[float]]]:
    values: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for turn in turns:
        if (turn.profile, turn.speed, turn.calls) == (cell.profile, cell.speed, cell.calls):
            values[turn.variant][turn.turn].append(float(getattr(turn, field)))
    lines = {}
    for variant, per_turn in values.items():
        numbers = sorted(per_turn)
        lines[variant] = (numbers, [median(per_turn[number]) for number in numbers])
    return lines


def _ordered(names: Sequence[str]) -> list[str]:
    rank = {name: index for index, name in enumerate(VARIANT_ORDER)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


def plot_by_turn(
    turns: Sequence[TurnSample], path: Path, field: str, ylabel: str, title: str, *, one_profile: bool = False
) -> bool:
    """One panel per profile (`one_profile`: only the first, for what the link does not change)."""
    cells = _focus_cells(turns)[:1] if one_profile else _focus_cells(turns)
    if not cells:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(cells), figsize=(5 * len(cells), 4), squeeze=False)
    for axis, cell in zip(axes[0], cells, strict=True):
        lines = _by_turn(turns, cell, field)
        for variant in _ordered(list(lines)):
            numbers, values = lines[variant]
            axis.plot(numbers, values, label=variant, linewidth=2 if variant == BASELINE else 1.2)
        axis.set_title(f"{cell.profile}, {_engine(cell.speed)}, {cell.calls} calls")
        axis.set_xlabel("turn")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    axes[0][0].legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_e2e_by_profile(rows: Sequence[Row], path: Path) -> bool:
    """Grouped bars: median end-to-end time per profile of the three transports, for each rollout length
    at 1,000 tok/s (or the first speed measured); the floor as a black tick."""
    core = [row for row in rows if row.variant in CORE_VARIANTS]
    if not core:
        return False
    speeds = {row.cell.speed for row in core}
    speed = "1000" if "1000" in speeds else sorted(speeds)[0]
    chosen = [row for row in core if row.cell.speed == speed]
    calls_values = sorted({row.cell.calls for row in chosen})
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(calls_values), figsize=(5 * len(calls_values), 4), squeeze=False)
    for axis, calls in zip(axes[0], calls_values, strict=True):
        cell_rows = [row for row in chosen if row.cell.calls == calls]
        profiles = [p for p in PROFILES if any(r.cell.profile == p for r in cell_rows)]
        variants = _ordered(sorted({row.variant for row in cell_rows}))
        width = 0.8 / max(len(variants), 1)
        for index, variant in enumerate(variants):
            heights, floors, positions = [], [], []
            for slot, profile in enumerate(profiles):
                match = [r for r in cell_rows if r.cell.profile == profile and r.variant == variant]
                if match:
                    positions.append(slot + index * width)
                    heights.append(match[0].e2e_s)
                    floors.append(match[0].floor_s)
            axis.bar(positions, heights, width, label=variant)
            axis.scatter(positions, floors, marker="_", color="black", s=200, zorder=3)
        axis.set_xticks([slot + 0.4 - width / 2 for slot in range(len(profiles))], profiles)
        axis.set_ylabel("end-to-end s (median)")
        axis.set_title(f"{calls} tool calls, {_engine(speed)} (tick: floor)")
        axis.grid(axis="y", alpha=0.3)
    axes[0][0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_variants(rows: Sequence[Row], path: Path) -> bool:
    """Bars for every variant of the cells that ran more than the three transports (the extras' cell):
    end-to-end time, its floor, and the KiB that crossed the link each way."""
    cells = sorted({row.cell for row in rows if row.variant not in CORE_VARIANTS}, key=lambda c: c.label)
    if not cells:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(len(cells), 2, figsize=(11, 4 * len(cells)), squeeze=False)
    for (timing, traffic), cell in zip(axes, cells, strict=True):
        cell_rows = {row.variant: row for row in rows if row.cell == cell}
        names = _ordered(list(cell_rows))
        positions = list(range(len(names)))
        timing.bar(positions, [cell_rows[name].e2e_s for name in names], color="tab:blue")
        timing.scatter(
            positions, [cell_rows[name].floor_s for name in names], marker="_", color="black", s=300
        )
        timing.set_xticks(positions, names, rotation=30, ha="right")
        timing.set_ylabel("end-to-end s (median; tick: floor)")
        timing.set_title(cell.label)
        up = [_wire_or_payload(cell_rows[name], "up") / 1024 for name in names]
        down = [_wire_or_payload(cell_rows[name], "down") / 1024 for name in names]
        traffic.bar([x - 0.2 for x in positions], up, 0.4, label="up")
        traffic.bar([x + 0.2 for x in positions], down, 0.4, label="down")
        traffic.set_xticks(positions, names, rotation=30, ha="right")
        traffic.set_ylabel("KiB on the link per rollout")
        traffic.legend()
        for axis in (timing, traffic):
            axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def _wire_or_payload(row: Row, direction: str) -> float:
    wire = row.wire_up if direction == "up" else row.wire_down
    if wire == wire:  # not NaN: measured on the emulated link
        return wire
    return row.bytes_up if direction == "up" else row.bytes_down


def write_plots(rows: Sequence[Row], turns: Sequence[TurnSample], directory: Path) -> list[Path]:
    """Every plot that the run has data for; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    latency = directory / "turn_latency.png"
    if plot_by_turn(turns, latency, "latency_ms", "turn latency ms (median)", "Turn latency by turn number"):
        written.append(latency)
    bytes_up = directory / "bytes_up_per_turn.png"
    if plot_by_turn(
        turns,
        bytes_up,
        "bytes_up",
        "request bytes per turn (median)",
        "Bytes sent per turn",
        one_profile=True,
    ):
        written.append(bytes_up)
    e2e = directory / "e2e_by_profile.png"
    if plot_e2e_by_profile(rows, e2e):
        written.append(e2e)
    variants = directory / "variants.png"
    if plot_variants(rows, variants):
        written.append(variants)
    return written


def write_real_plots(rows: Sequence[Row], turns: Sequence[TurnSample], directory: Path) -> list[Path]:
    """The real-model run's plots: turn latency, TTFT and tokens prefilled by turn number (one panel per
    profile), and end-to-end time per profile."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, field, ylabel, title in (
        ("turn_latency.png", "latency_ms", "turn latency ms (median)", "Turn latency by turn"),
        ("ttft.png", "ttft_ms", "TTFT ms (median, client)", "Time to first output by turn"),
        (
            "prefilled_tokens.png",
            "prefilled_tokens",
            "prompt tokens prefilled (median)",
            "Prompt tokens prefilled by turn (the rest: the engine's KV)",
        ),
    ):
        path = directory / name
        present = [turn for turn in turns if getattr(turn, field) is not None]
        if plot_by_turn(present, path, field, ylabel, title):
            written.append(path)
    e2e = directory / "e2e_by_profile.png"
    if plot_e2e_by_profile(rows, e2e):
        written.append(e2e)
    return written
