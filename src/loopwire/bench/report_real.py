"""Reading a real-model agent-loop run: per profile and transport the medians of end-to-end time, TTFT
(the client's and the engine's), tokens prefilled vs reused; the http-full / ws ratio per profile; and
whether every transport carried the same history (per-turn prompt tokens and the model's output).

Owns this aggregation and its markdown; must not measure. Ratios compare rollouts of the same run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from ..netem import PROFILES
from .plots import VARIANT_ORDER
from .report import BASELINE, median, turns_by_rollout
from .samples import RolloutSample, TurnSample

HEADLINE = "http-full"


@dataclass(frozen=True, slots=True)
class RealRow:
    profile: str
    variant: str
    rollouts: int
    e2e_s: float
    ttft_ms: float
    engine_ttft_ms: float
    latency_ms: float
    prefilled: float
    reused: float
    output_tokens: float
    kib_up: float
    all_finished: bool


def _rank(row: RealRow) -> tuple[int, int, str]:
    profiles, variants = list(PROFILES), list(VARIANT_ORDER)
    return (
        profiles.index(row.profile) if row.profile in profiles else len(profiles),
        variants.index(row.variant) if row.variant in variants else len(variants),
        row.variant,
    )


def aggregate_real(rollouts: Sequence[RolloutSample], turns: Sequence[TurnSample]) -> list[RealRow]:
    by_rollout = turns_by_rollout(turns)
    groups: dict[tuple[str, str], list[RolloutSample]] = defaultdict(list)
    for rollout in rollouts:
        groups[(rollout.profile, rollout.variant)].append(rollout)
    rows = []
    for (profile, variant), members in groups.items():
        own = [turn for member in members for turn in by_rollout[member.rollout]]
        rows.append(
            RealRow(
                profile=profile,
                variant=variant,
                rollouts=len(members),
                e2e_s=median(m.e2e_s for m in members),
                ttft_ms=median(t.ttft_ms for t in own if t.ttft_ms is not None),
                engine_ttft_ms=median(t.engine_ttft_ms for t in own if t.engine_ttft_ms is not None),
                latency_ms=median(t.latency_ms for t in own),
                prefilled=median(sum(t.prefilled_tokens for t in by_rollout[m.rollout]) for m in members),
                reused=median(sum(t.cached_tokens for t in by_rollout[m.rollout]) for m in members),
                output_tokens=median(sum(t.output_tokens for t in by_rollout[m.rollout]) for m in members),
                kib_up=median(m.bytes_up for m in members) / 1024,
                all_finished=all(m.finished for m in members),
            )
        )
    return sorted(rows, key=_rank)


def ratios(rows: Sequence[RealRow], variant: str = HEADLINE) -> dict[str, float]:
    """Per profile: `variant`'s median end-to-end time over ws's."""
    base = {row.profile: row.e2e_s for row in rows if row.variant == BASELINE}
    return {
        row.profile: row.e2e_s / base[row.profile]
        for row in rows
        if row.variant == variant and base.get(row.profile, 0) > 0
    }


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:,.0f}"  # NaN: not measured (e.g. no engine timings)


def table(rows: Sequence[RealRow]) -> str:
    base = {row.profile: row.e2e_s for row in rows if row.variant == BASELINE}
    lines = [
        "| profile | variant | rollouts | e2e s | vs ws | TTFT p50 ms | engine TTFT p50 ms | turn p50 ms "
        "| prefilled tok | reused tok | output tok | KiB up |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ws = base.get(row.profile)
        ratio = f"{row.e2e_s / ws:.2f}x" if ws else "-"
        flag = "" if row.all_finished else " (unfinished)"
        lines.append(
            f"| {row.profile} | {row.variant}{flag} | {row.rollouts} | {row.e2e_s:.1f} | {ratio} | "
            f"{_ms(row.ttft_ms)} | {_ms(row.engine_ttft_ms)} | {_ms(row.latency_ms)} | "
            f"{row.prefilled:,.0f} | {row.reused:,.0f} | {row.output_tokens:,.0f} | {row.kib_up:,.1f} |"
        )
    return "\n".join(lines)


def divergences(rollouts: Sequence[RolloutSample], turns: Sequence[TurnSample]) -> list[str]:
    """Where rollouts of one repeat (same fixture, same task) differ between transports: a turn's prompt
    token count or the model's output. Greedy decoding should leave none."""
    repeat_of = {rollout.rollout: rollout.repeat for rollout in rollouts}
    seen: dict[tuple[int, int], dict[tuple[int, str], list[str]]] = defaultdict(lambda: defaultdict(list))
    for turn in turns:
        if turn.rollout in repeat_of:
            key = (turn.input_tokens, turn.output_digest)
            seen[(repeat_of[turn.rollout], turn.turn)][key].append(turn.rollout)
    found = []
    for (repeat, number), variants in sorted(seen.items()):
        if len(variants) > 1:
            shown = "; ".join(
                f"{tokens} prompt tokens, output {digest}: {', '.join(sorted(names))}"
                for (tokens, digest), names in variants.items()
            )
            found.append(f"repeat {repeat}, turn {number}: {shown}")
    return found


def report_real(rollouts: Sequence[RolloutSample], turns: Sequence[TurnSample]) -> str:
    rows = aggregate_real(rollouts, turns)
    labels = sorted({rollout.calls_label for rollout in rollouts if rollout.calls_label})
    engines = sorted({rollout.speed for rollout in rollouts})
    headline = ", ".join(f"{profile} {value:.2f}x" for profile, value in ratios(rows).items())
    split = divergences(rollouts, turns)
    history = (
        "the same on every transport (per-turn prompt tokens and the model's output equal in every repeat)"
        if not split
        else "DIFFERENT between transports:\n" + "\n".join(f"- {line}" for line in split)
    )
    return (
        f"engine: {', '.join(engines)}; calls: {'; '.join(labels) or 'the sim engine policy'}; "
        "greedy decoding\n"
        f"http-full / ws end to end (medians): {headline or '-'}\n"
        f"history: {history}\n\n"
        "Per rollout: e2e, prefilled and reused tokens (prompt tokens the engine computed vs those its KV "
        "held), output tokens and request KiB are medians over the repeats of each rollout's total; TTFT "
        "and turn latency are medians over all turns. TTFT is the client's first output delta (a forced "
        "call arrives whole, so it includes decoding the call); engine TTFT is the engine's first token "
        "(render and prefill).\n\n" + table(rows) + "\n"
    )
