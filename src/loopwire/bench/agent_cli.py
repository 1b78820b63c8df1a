"""`loopwire bench agent` (also plain `loopwire bench --quick|--full`): run the agent-loop benchmark and
write its table, JSON lines and plots.

Owns argument parsing and where the outputs go; must not measure or aggregate itself.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..netem import PROFILES
from .campaign import run_plan
from .grid import CORE_VARIANTS, EXTRA_VARIANTS, SPEEDS, VARIANTS, Cell, Plan, full_plan, quick_plan
from .report import aggregate, report
from .samples import RolloutSample, TurnSample, read_jsonl


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _numbers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loopwire bench agent",
        description="Run the toy coding agent over HTTP (full and chained) and WebSocket mode through an "
        "emulated link, against loopwire on the sim engine at several speeds, and report end-to-end time, "
        "TTFT, turn latency, bytes on the wire, render reuse and server CPU against the floor.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="loopback and mobile, 4,000 tok/s, 50 calls (<1 min)"
    )
    mode.add_argument("--full", action="store_true", help="every profile, speed and length, plus the extras")
    mode.add_argument("--report", type=Path, metavar="JSONL", help="only re-read a run's JSON lines")
    parser.add_argument("--profiles", type=_names, help=f"comma-separated, of {', '.join(PROFILES)}")
    parser.add_argument("--speeds", type=_names, help=f"decode tok/s presets, of {', '.join(SPEEDS)}")
    parser.add_argument("--calls", type=_numbers, help="tool calls per rollout, e.g. 5,20,50")
    parser.add_argument(
        "--variants", type=_names, help=f"default {','.join(CORE_VARIANTS)}; known: {', '.join(VARIANTS)}"
    )
    parser.add_argument(
        "--extras",
        type=_names,
        help=f"variants run in one cell only (--extras-cell); --full: {','.join(EXTRA_VARIANTS)}",
    )
    parser.add_argument("--extras-cell", default="wan,1000,20", help="profile,speed,calls (%(default)s)")
    parser.add_argument("--repeats", type=int, help="rollouts per variant and cell (default 1; --full 2)")
    parser.add_argument(
        "--file-kb", type=int, default=0, help="pad each fixture module by N KiB: more history per read"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/agent"), help="%(default)s")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return parser


def plan_from(args: argparse.Namespace) -> Plan:
    base = full_plan() if args.full else quick_plan()
    extras = args.extras if args.extras is not None else base.extras
    extras_cell = base.extras_cell
    if args.extras is not None:
        parts = _names(args.extras_cell)
        if len(parts) != 3 or not parts[2].isdigit():
            raise ValueError(f"--extras-cell takes profile,speed,calls, got {args.extras_cell!r}")
        extras_cell = Cell(parts[0], parts[1], int(parts[2]))
    return Plan(
        profiles=args.profiles or base.profiles,
        speeds=args.speeds or base.speeds,
        calls=args.calls or base.calls,
        variants=args.variants or base.variants,
        repeats=args.repeats if args.repeats is not None else base.repeats,
        extras=extras,
        extras_cell=extras_cell,
        file_kb=args.file_kb,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out: Path = args.out
    if args.report is not None:
        rollouts = list(read_jsonl(args.report, RolloutSample))
        turns = list(read_jsonl(args.report, TurnSample))
    else:
        try:
            plan = plan_from(args)
        except ValueError as error:
            parser.error(str(error))
        out.mkdir(parents=True, exist_ok=True)
        jsonl = out / "bench.jsonl"
        jsonl.unlink(missing_ok=True)
        print(
            f"loopwire bench: {plan.rollouts} rollouts over {len(plan.cells())} cells "
            f"(profiles {','.join(plan.profiles)}; speeds {','.join(plan.speeds)} tok/s; "
            f"calls {','.join(map(str, plan.calls))}; repeats {plan.repeats}; fixture padding "
            f"{plan.file_kb} KiB per module)",
            file=sys.stderr,
        )
        started = time.monotonic()
        campaign = asyncio.run(run_plan(plan, jsonl))
        rollouts, turns = campaign.rollouts, campaign.turns
        print(f"measured in {time.monotonic() - started:.0f} s; records in {jsonl}", file=sys.stderr)
    rows = aggregate(rollouts, turns)
    text = report(rows)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(text)
    if not args.no_plots and importlib.util.find_spec("matplotlib") is None:
        print("plots skipped: matplotlib is not installed (pip install 'loopwire[bench]')", file=sys.stderr)
    elif not args.no_plots:
        from .plots import write_plots

        for path in write_plots(rows, turns, out):
            print(f"plot: {path}", file=sys.stderr)
    unfinished = [row for row in rows if not row.all_finished]
    return 1 if unfinished else 0
