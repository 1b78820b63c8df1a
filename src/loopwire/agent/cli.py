"""The agent's command line: `python -m loopwire.agent --repo DIR ...` (and `loopwire agent` later).

Owns argument parsing and printing one rollout's metrics; must not hold loop, tool or policy logic.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

from ..client import TRANSPORTS
from .fixture import SIDECAR, read_fix, write_fixture
from .loop import AgentConfig, run_agent
from .tools import ToolSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loopwire agent",
        description="Run the toy coding agent on a repository against a loopwire server (sim engine).",
    )
    parser.add_argument("--repo", type=Path, required=True, help="the repository directory")
    parser.add_argument(
        "--create-fixture",
        action="store_true",
        help="write the fixture repository (with its bug) into --repo first",
    )
    parser.add_argument(
        "--bug", type=int, default=None, help="with --create-fixture: which bug (default: by seed)"
    )
    parser.add_argument("--transport", choices=TRANSPORTS, default="ws")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--model", default="sim")
    parser.add_argument(
        "--explore", type=int, default=10, help="exploration steps (rollout = N + 5 tool calls)"
    )
    parser.add_argument("--batch", type=int, default=1, help="parallel reads per turn while exploring")
    parser.add_argument("--flaky", type=float, default=0.0, help="probability that a tool call fails")
    parser.add_argument("--flaky-delay", type=float, default=0.02, help="seconds a simulated timeout waits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-turns", type=int, default=400)
    parser.add_argument("--json", action="store_true", help="print the totals as one JSON object")
    parser.add_argument("--turns", action="store_true", help="also print one line per turn")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one rollout; 0 when the agent finished, 1 when it did not, 2 on bad arguments."""
    args = build_parser().parse_args(argv)
    repo: Path = args.repo
    if args.explore < 0 or args.batch < 1 or args.max_turns < 1:
        print("error: --explore must be >= 0, --batch and --max-turns >= 1")
        return 2
    try:
        tools = ToolSettings(flaky=args.flaky, seed=args.seed, flaky_delay_s=args.flaky_delay)
    except ValueError as error:
        print(f"error: {error}")
        return 2
    if args.create_fixture:
        write_fixture(repo, args.seed, args.bug)
    elif not (repo / SIDECAR).is_file():
        print(f"error: {repo} has no {SIDECAR}; create the fixture with --create-fixture")
        return 2
    config = AgentConfig(
        base_url=args.base_url,
        transport=args.transport,
        model=args.model,
        api_key=args.api_key,
        explore=args.explore,
        seed=args.seed,
        batch=args.batch,
        max_turns=args.max_turns,
        tools=tools,
    )
    run = asyncio.run(run_agent(repo, read_fix(repo), config))
    if args.turns:
        for turn in run.turns:
            m = turn.metrics
            ttft = f"{m.ttft_s * 1000:.2f}" if m.ttft_s is not None else "-"
            print(
                f"turn {turn.number:3d}  {m.transport:12s} delta={int(m.sent_delta)} ttft_ms={ttft} "
                f"latency_ms={m.latency_s * 1000:.2f} up={m.bytes_up} down={m.bytes_down} "
                f"calls={turn.tool_calls} errors={turn.tool_errors} tool_ms={turn.tool_time_s * 1000:.1f}"
            )
    summary = run.summary()
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        for key, value in summary.items():
            print(f"{key:12s} {value}")
    return 0 if run.finished else 1
