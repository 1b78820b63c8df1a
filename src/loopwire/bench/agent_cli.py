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

from ..agent.forced import DEFAULT_CALL_TOKENS
from ..netem import PROFILES
from .agent_real import ENGINES, REAL_VARIANTS, RealPlan, run_real
from .campaign import Campaign, run_plan
from .grid import CORE_VARIANTS, EXTRA_VARIANTS, SPEEDS, VARIANTS, Cell, Plan, full_plan, quick_plan
from .llama import RealTierMissing, model_path, real_python
from .measure import RealModel
from .report import aggregate, report
from .report_real import report_real
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
    real = parser.add_argument_group(
        "real model (--real)",
        "The same rollouts on a real model: the scripted policy forces each call through tool_choice "
        "(the model decodes its arguments, the agent runs the policy's), greedy decoding, short tool "
        "outputs. Defaults: --profiles wan,mobile --variants http-full,ws --calls 5 --repeats 2.",
    )
    real.add_argument("--real", action="store_true", help="run the agent loop on a real model")
    real.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local: in process on the GGUF; openai-chat: in front of a real llama.cpp server "
        "(llama-cpp-python, from the real tier's venv); sim: the machinery without a model (%(default)s)",
    )
    real.add_argument(
        "--model", type=Path, help="the GGUF (default: SmolLM2's, from the real tier's venv, make real-setup)"
    )
    real.add_argument("--gguf-cache", type=Path, help="where the GGUF is converted once (local engine)")
    real.add_argument("--max-turns", type=int, default=400, help="stop each rollout after N turns")
    real.add_argument(
        "--call-tokens", type=int, default=DEFAULT_CALL_TOKENS, help="max_output_tokens of a forced call"
    )
    real.add_argument(
        "--tool-output-chars", type=int, default=600, help="tool outputs kept to N characters (min 200)"
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


def real_plan_from(args: argparse.Namespace) -> RealPlan:
    model: Path | None = args.model
    if model is None and args.engine != "sim":
        model = model_path(real_python(Path.cwd()))
    if args.max_turns < 1 or args.call_tokens < 1 or args.tool_output_chars < 200:
        raise ValueError("--max-turns and --call-tokens must be at least 1, --tool-output-chars 200")
    calls = args.calls or (5,)
    if len(calls) != 1:
        raise ValueError("--real runs one rollout length: give --calls one number")
    return RealPlan(
        engine=args.engine,
        model=model,
        profiles=args.profiles or ("wan", "mobile"),
        variants=args.variants or REAL_VARIANTS,
        calls=calls[0],
        repeats=args.repeats if args.repeats is not None else 2,
        real=RealModel(
            model="smollm2",
            call_tokens=args.call_tokens,
            tool_output_chars=args.tool_output_chars,
            max_turns=args.max_turns,
        ),
        gguf_cache=args.gguf_cache,
    )


def _run_real(parser: argparse.ArgumentParser, args: argparse.Namespace, jsonl: Path) -> Campaign:
    try:
        plan = real_plan_from(args)
    except (ValueError, RealTierMissing) as error:
        parser.error(str(error))
    print(
        f"loopwire bench agent --real: {plan.rollouts} rollouts on {plan.label} "
        f"({plan.model or 'no model'}); "
        f"profiles {','.join(plan.profiles)}; variants {','.join(plan.variants)}; {plan.calls} calls; "
        f"repeats {plan.repeats}; tool outputs <= {plan.real.tool_output_chars} chars",
        file=sys.stderr,
    )
    return asyncio.run(run_real(plan, jsonl))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out: Path = args.out
    if args.real and args.report is not None:
        rollouts, turns = (
            list(read_jsonl(args.report, RolloutSample)),
            list(read_jsonl(args.report, TurnSample)),
        )
        out.mkdir(parents=True, exist_ok=True)
        return _write_real(rollouts, turns, out, plots=not args.no_plots, capped=args.max_turns < 400)
    if args.real:
        return _main_real(parser, args, out)
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


def _main_real(parser: argparse.ArgumentParser, args: argparse.Namespace, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "bench.jsonl"
    jsonl.unlink(missing_ok=True)
    started = time.monotonic()
    campaign = _run_real(parser, args, jsonl)
    print(f"measured in {time.monotonic() - started:.0f} s; records in {jsonl}", file=sys.stderr)
    return _write_real(
        campaign.rollouts, campaign.turns, out, plots=not args.no_plots, capped=args.max_turns < 400
    )


def _write_real(
    rollouts: list[RolloutSample], turns: list[TurnSample], out: Path, *, plots: bool, capped: bool
) -> int:
    text = report_real(rollouts, turns)
    print(text)
    (out / "report.md").write_text(text)
    if plots and importlib.util.find_spec("matplotlib") is None:
        print("plots skipped: matplotlib is not installed (pip install 'loopwire[bench]')", file=sys.stderr)
    elif plots:
        from .plots import write_real_plots

        for path in write_real_plots(aggregate(rollouts, turns), turns, out):
            print(f"plot: {path}", file=sys.stderr)
    unfinished = [rollout for rollout in rollouts if not rollout.finished]
    return 1 if unfinished and not capped else 0
