"""`loopwire bench local-turn`: one agent turn on the local engine (a forced tool call, ~31 output tokens,
after a ~100-token tool output) at chosen context lengths, with the engine's decoding costs switched on
one by one, measured side by side in one run:

- before: transformers' DynamicCache (grows by `torch.cat`, copying the whole KV every forward), masked
  attention after `repeat_kv` copies, one forward pass per output token;
- +cache: the lane's KV cache grows in place (engines/local/kv_cache.py);
- +gqa: masked grouped-query attention in one SDPA call, no copies (TRANSFORMERS_SDPA_FORCE_GQA);
- after: and the grammar's forced tokens fed as a verified draft (jump_forward).

Each measured turn forks the same lane state (its cache cropped back after the turn), so every mode runs
the same prompt on the same cached context; modes alternate order per repeat. Two lanes per context:
DynamicCache for `before`, the growing cache for the rest. The outputs must be the same in every mode.

Owns this measurement; needs the [local] extra (torch, transformers, xgrammar), imported only when it runs.

    loopwire bench local-turn --model SmolLM2-135M-Instruct.Q4_1.gguf --contexts 1000,4000,7000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..engines.base import EngineRequest, Finished, NamedToolChoice, ToolArgumentsDelta, ToolSpec
from ..engines.local import LocalEngine, LocalRenderState, LocalSettings
from ..engines.local.generation import common_prefix
from ..engines.local.loader import LoadedModel
from ..protocol.context import EMPTY_CONTEXT, Context
from ..protocol.items import FunctionCall, FunctionCallOutput, Message
from .local_kv import tool_output

OPEN = ToolSpec(
    "open",
    "Open a file of the repository.",
    {
        "type": "object",
        "properties": {"path": {"enum": ["a.py", "b.py"]}},
        "required": ["path"],
        "additionalProperties": False,
    },
)
MODES: dict[str, tuple[str, bool, bool]] = {
    "before": ("dynamic", False, False),
    "+cache": ("growing", False, False),
    "+gqa": ("growing", True, False),
    "after": ("growing", True, True),
}
"""mode: (lane's cache, GQA without copies, jump_forward)."""
GQA_ENV = "TRANSFORMERS_SDPA_FORCE_GQA"


@dataclass
class Lane:
    """One conversation at its current length: the history, the engine's state for it, the last call."""

    history: Context
    state: LocalRenderState | None = None
    call: str = json.dumps({"path": "a.py"})
    turn: int = 0
    samples: dict[str, list[tuple[float, float, int]]] = field(default_factory=dict)
    outputs: dict[str, set[str]] = field(default_factory=dict)


def dynamic_cache(loaded: LoadedModel) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=loaded.config)


async def one_turn(engine: LocalEngine, lane: Lane, output: str) -> tuple[float, Finished, str, Context]:
    """The lane's next turn with this tool output (not applied to the lane)."""
    lane.turn += 1
    call = FunctionCall(call_id=f"call_{lane.turn}", name="open", arguments=lane.call)
    history = lane.history.extend([call, FunctionCallOutput(call_id=call.call_id, output=output)])
    request = EngineRequest(
        model="bench",
        history=history,
        prefix=lane.state,
        prefix_items=lane.history.length if lane.state is not None else 0,
        tools=(OPEN,),
        tool_choice=NamedToolChoice("open"),
        max_output_tokens=48,
        temperature=0.0,
    )
    arguments: list[str] = []
    started = time.perf_counter()
    async for batch in engine.stream(request):
        for delta in batch:
            if isinstance(delta, ToolArgumentsDelta):
                arguments.append(delta.delta)
            elif isinstance(delta, Finished):
                return (time.perf_counter() - started) * 1000.0, delta, "".join(arguments), history
    raise RuntimeError("the stream ended without Finished")


def grow(engine: LocalEngine, lane: Lane, tokens: int) -> None:
    """Extends the lane by one turn whose tool output brings its context to about `tokens`."""
    have = 0 if lane.state is None else lane.state.token_count
    _, finished, arguments, history = asyncio.run(
        one_turn(engine, lane, tool_output(engine, lane.turn, max(tokens - have - 60, 20)))
    )
    assert isinstance(finished.render, LocalRenderState)
    lane.history, lane.state, lane.call = history, finished.render, arguments or lane.call


def fork(engine: LocalEngine, lane: Lane, mode: str, tool_tokens: int) -> None:
    """A measured turn from the lane's state; afterwards its cache goes back to the lane's state, cropped
    to what the two share (after the first fork of a state, every fork reuses the same prefix)."""
    _, gqa, jump = MODES[mode]
    os.environ[GQA_ENV] = "1" if gqa else "0"
    engine.generator.jump_forward = jump
    parent = lane.state
    assert parent is not None
    passes = engine.stats.forward_passes
    ms, finished, arguments, _ = asyncio.run(one_turn(engine, lane, tool_output(engine, 7, tool_tokens)))
    lane.turn -= 1  # the same call id next time: every fork is the same prompt
    passes = engine.stats.forward_passes - passes
    lane.samples.setdefault(mode, []).append((ms, finished.timings.get("ttft_ms", ms), passes))
    lane.outputs.setdefault(mode, set()).add(arguments)
    child = finished.render
    assert isinstance(child, LocalRenderState)
    entry = engine.pool.take(child)
    assert entry is not None, "the KV budget evicted the lane"
    shared = common_prefix(parent.ids, child.ids[: entry.length])
    entry.cache.crop(shared - entry.length)
    engine.pool.put(parent, entry.cache, shared)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="loopwire bench local-turn", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--model", required=True, help="a model directory or GGUF file (a real model)")
    parser.add_argument("--contexts", default="1000,4000,7000", help="context lengths in tokens")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tool-tokens", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    contexts = sorted(int(tokens) for tokens in args.contexts.split(","))
    engine = LocalEngine(LocalSettings(model=args.model))
    print(f"model: {Path(args.model).name}, {torch.get_num_threads()} torch threads", file=sys.stderr)
    growing = engine.generator.new_cache
    task = EMPTY_CONTEXT.extend([Message(role="user", content="Fix the failing test.")])
    lanes = {kind: Lane(task) for kind in ("dynamic", "growing")}
    summary: dict[str, dict[str, Any]] = {}
    rows: list[str] = []
    for tokens in contexts:
        for kind, lane in lanes.items():
            engine.generator.new_cache = dynamic_cache if kind == "dynamic" else growing
            started = time.perf_counter()
            grow(engine, lane, tokens)
            length = lane.state.token_count if lane.state else 0
            print(f"{kind} lane at {length} tokens ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
            fork(engine, lane, "after" if kind == "growing" else "before", args.tool_tokens)  # settles
            lane.samples.clear()
            lane.outputs.clear()
        for repeat in range(args.repeats):
            order = list(MODES) if repeat % 2 == 0 else list(reversed(MODES))
            for mode in order:
                fork(engine, lanes[MODES[mode][0]], mode, args.tool_tokens)
        medians: dict[str, Any] = {}
        outputs: set[str] = set()
        for mode, (kind, _, _) in MODES.items():
            samples = lanes[kind].samples[mode]
            medians[mode] = {
                "turn_ms": statistics.median(sample[0] for sample in samples),
                "ttft_ms": statistics.median(sample[1] for sample in samples),
                "forward_passes": statistics.median(sample[2] for sample in samples),
            }
            outputs |= lanes[kind].outputs[mode]
        context = lanes["growing"].state.token_count if lanes["growing"].state else 0
        summary[str(context)] = {"modes": medians, "same_output": len(outputs) == 1}
        turn = {mode: value["turn_ms"] for mode, value in medians.items()}
        rows.append(
            f"| {context} | {turn['before']:.0f} | {turn['+cache']:.0f} | {turn['+gqa']:.0f} | "
            f"{turn['after']:.0f} | {turn['before'] / turn['after']:.1f}x | "
            f"{medians['before']['forward_passes']:.0f} / {medians['after']['forward_passes']:.0f} | "
            f"{'yes' if len(outputs) == 1 else 'NO: ' + ' '.join(sorted(outputs))} |"
        )
        print(rows[-1], file=sys.stderr)
    os.environ[GQA_ENV] = "1"
    print(f"\nmedian turn ms, {args.repeats} repeats; a forced call after a {args.tool_tokens}-token output")
    print(
        "| context | before | +cache | +gqa | after (+jump-forward) | before/after | forward passes | same |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0
