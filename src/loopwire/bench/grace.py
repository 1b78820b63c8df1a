"""`loopwire bench grace`: what reconnect grace saves per cut on a mobile link, with and without, one run.

One `loopwire serve --resume-grace-s 120` (sim engine with a prefill speed, so a lost render cache costs
model time as on a real server) behind the link emulator (`loopwire.netem`, in process, `--profile`,
default mobile: 50 ms each way, 5 Mbit/s up, 20 Mbit/s down). The toy coding agent runs store=false
rollouts over WebSocket mode: for each seed, a rollout without cuts (the baseline), one with cuts where
the client asks for resume tokens (`SessionOptions(resume=True)`) and one where it does not; the order
rotates per seed. A cut resets every connection on the link a moment into chosen turns, mid-request.
Per cut: the bytes the client sent beyond the baseline (link bytes up, handshakes included) and the model
time lost (the turns' time, tools excluded), medians over seeds. Owns this benchmark's rollouts, cuts and
table; must not reach into the server (it drives `loopwire serve` as a process and the agent as a client).

    loopwire bench grace [--seeds 4] [--explore 20] [--cuts 8,14,20] [--profile mobile] [--padding-bytes 8192]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from ..agent.fixture import read_fix, write_fixture
from ..agent.loop import AgentConfig, TurnRecord, run_agent
from ..client import SessionOptions
from ..client.backoff import Backoff
from ..netem.emulator import LinkEmulator
from .processes import ServerProcess
from .table import write_summary

MODES = ("baseline", "grace", "no-grace")
CUT_DELAY_S = 0.03
"""How far into a turn the link is cut: the request is on its way, no output has come back."""


@dataclass(slots=True)
class Rollout:
    bytes_up: int
    model_s: float
    cuts: int
    resumed: int
    replays: int
    turns: int


class CutObserver:
    """Cuts every connection on the link `CUT_DELAY_S` into each turn numbered in `cuts`."""

    def __init__(self, link: LinkEmulator, cuts: set[int]) -> None:
        self.link = link
        self.cuts = cuts
        self.done = 0

    def turn_started(self, number: int) -> None:
        if number in self.cuts:
            asyncio.get_running_loop().call_later(CUT_DELAY_S, self._cut)

    def _cut(self) -> None:
        if self.link.cut_all():
            self.done += 1

    def turn_finished(self, record: TurnRecord) -> None:
        pass


async def rollout(
    args: argparse.Namespace, server: ServerProcess, link: LinkEmulator, mode: str, seed: int, repo: Path
) -> Rollout:
    write_fixture(repo, seed, padding_bytes=args.padding_bytes)
    observer = CutObserver(link, set() if mode == "baseline" else set(args.cuts))
    options = SessionOptions(resume=mode == "grace", backoff=Backoff(base_s=0.02, max_s=0.2))
    config = AgentConfig(
        base_url=server.base_url,
        transport="ws",
        store=False,
        explore=args.explore,
        seed=seed,
        session=options,
        ws_url=f"ws://127.0.0.1:{link.port}/v1/responses",
        task_note=f"(seed {seed})",
    )
    before = link.totals().bytes_up
    run = await run_agent(repo, read_fix(repo), config, observer)
    return Rollout(
        bytes_up=link.totals().bytes_up - before,
        model_s=sum(turn.metrics.latency_s for turn in run.turns),
        cuts=observer.done,
        resumed=sum(turn.metrics.resumed for turn in run.turns),
        replays=sum(1 for turn in run.turns[1:] if not turn.metrics.sent_delta),
        turns=run.turn_count,
    )


async def campaign(args: argparse.Namespace, server: ServerProcess, root: Path) -> dict[str, Any]:
    results: dict[str, list[Rollout]] = {mode: [] for mode in MODES}
    async with LinkEmulator(server.port, args.profile) as link:
        for seed in range(args.seeds):
            order = MODES[seed % 3 :] + MODES[: seed % 3]
            for mode in order:
                results[mode].append(await rollout(args, server, link, mode, seed, root / f"{mode}-{seed}"))
    summary: dict[str, Any] = {}
    for mode in ("grace", "no-grace"):
        extra_bytes, lost_s = [], []
        for cut, plain in zip(results[mode], results["baseline"], strict=True):
            if cut.cuts:
                extra_bytes.append((cut.bytes_up - plain.bytes_up) / cut.cuts)
                lost_s.append((cut.model_s - plain.model_s) / cut.cuts)
        summary[mode] = {
            "bytes_resent_per_cut": statistics.median(extra_bytes),
            "seconds_lost_per_cut": statistics.median(lost_s),
            "cuts": sum(r.cuts for r in results[mode]),
            "resumed_turns": sum(r.resumed for r in results[mode]),
            "history_replays": sum(r.replays for r in results[mode]),
        }
    base = results["baseline"]
    summary["baseline"] = {
        "bytes_up": statistics.median(r.bytes_up for r in base),
        "model_s": statistics.median(r.model_s for r in base),
        "turns": statistics.median(r.turns for r in base),
    }
    return summary


def report(args: argparse.Namespace, summary: dict[str, Any]) -> None:
    base = summary["baseline"]
    print(
        f"\n{args.seeds} seeds x (baseline, grace, no grace), store=false coding-agent rollouts of "
        f"~{base['turns']:.0f} turns (fixture padding {args.padding_bytes} B), link profile {args.profile}, "
        f"cuts {CUT_DELAY_S * 1000:.0f} ms into "
        f"turns {','.join(map(str, args.cuts))}; baseline: {base['bytes_up'] / 1024:.0f} KiB up, "
        f"{base['model_s']:.2f} s of model turns per rollout\n"
    )
    print("| client | cuts | resumed | history replays | re-sent per cut (p50) | time lost per cut (p50) |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode, label in (("grace", "resume=True (grace)"), ("no-grace", "resume=False (no grace)")):
        row = summary[mode]
        print(
            f"| {label} | {row['cuts']} | {row['resumed_turns']} | {row['history_replays']} | "
            f"{row['bytes_resent_per_cut'] / 1024:.1f} KiB | {row['seconds_lost_per_cut'] * 1000:.0f} ms |"
        )
    grace, plain = summary["grace"], summary["no-grace"]
    print(
        f"\ngrace saves {(plain['bytes_resent_per_cut'] - grace['bytes_resent_per_cut']) / 1024:.1f} KiB and "
        f"{(plain['seconds_lost_per_cut'] - grace['seconds_lost_per_cut']) * 1000:.0f} ms per cut"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loopwire bench grace", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--explore", type=int, default=20, help="exploration calls per rollout (turns ~ +6)")
    parser.add_argument("--cuts", type=lambda text: [int(n) for n in text.split(",")], default=[8, 14, 20])
    parser.add_argument("--profile", default="mobile")
    parser.add_argument(
        "--padding-bytes", type=int, default=8192, help="grows the fixture's modules (bigger file reads)"
    )
    parser.add_argument("--sim-prefill-tps", default="8000", help="the sim engine's prefill speed")
    parser.add_argument("--sim-decode-tps", default="200")
    parser.add_argument("--json", type=Path, help="also write the summary here as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="loopwire-bench-grace-") as tmp:
        root = Path(tmp)
        server_args = (
            "--resume-grace-s", "120",
            "--sim-prefill-tps", args.sim_prefill_tps,
            "--sim-decode-tps", args.sim_decode_tps,
        )  # fmt: skip
        server = ServerProcess("memory", root / "server.log", server_args).start()
        try:
            summary = uvloop.run(campaign(args, server, root))
        finally:
            server.stop()
    report(args, summary)
    write_summary(args.json, args, summary)
    return 0
