"""`loopwire bench local`: the local engine's time to first token at chosen turns of a growing agent
conversation, with the lane's KV cache reused (the WebSocket fast path) and without it (every turn a full
prefill, as over HTTP).

Builds a randomly initialised Qwen2-style model (default ~23M parameters) and a small trained BPE tokenizer
in a temporary directory: nothing is downloaded, and the numbers measure prefill cost, not model quality.
Each turn appends a function call and a tool output of about --tool-tokens tokens. At each measured turn
the same request runs both ways, in alternating order; TTFT is the wall time of a one-token turn through
`LocalEngine.stream` (render, prefill, first token).

Owns this measurement; needs the [local] extra (torch, transformers), imported only when it runs.

    loopwire bench local --turns 1,10,30 --conversations 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ..engines.base import EngineRequest, Finished, RenderState, TextDelta
from ..engines.local import LocalEngine, LocalSettings
from ..engines.local.scratch import build_model_dir
from ..engines.local.settings import DTYPES
from ..protocol.context import EMPTY_CONTEXT, Context
from ..protocol.items import FunctionCall, FunctionCallOutput, InputItem, Message, OutputText


def tool_output(engine: LocalEngine, turn: int, tokens: int) -> str:
    lines: list[str] = []
    while len(engine.template.encode("\n".join(lines))) < tokens:
        n = len(lines)
        lines.append(
            f"src/loopwire/module_{turn}_{n}.py:{n * 7 + turn}: def handler_{n}(request): return {n}"
        )
    return "\n".join(lines)


async def one_token_turn(
    engine: LocalEngine, history: Context, prefix: RenderState | None, prefix_items: int
) -> tuple[float, Finished, str]:
    request = EngineRequest(
        model="bench", history=history, prefix=prefix, prefix_items=prefix_items, max_output_tokens=1
    )
    started = time.perf_counter()
    text: list[str] = []
    async for batch in engine.stream(request):
        for delta in batch:
            if isinstance(delta, TextDelta):
                text.append(delta.text)
            elif isinstance(delta, Finished):
                return (time.perf_counter() - started) * 1000.0, delta, "".join(text)
    raise RuntimeError("the stream ended without Finished")


async def conversation(
    engine: LocalEngine, measured: set[int], last: int, tool_tokens: int, flip: bool
) -> dict[int, dict[str, float]]:
    history = EMPTY_CONTEXT.extend([Message(role="user", content="Find and fix the failing test, please.")])
    state: RenderState | None = None
    prefix_items = 0
    samples: dict[int, dict[str, float]] = {}
    for turn in range(1, last + 1):
        if turn in measured:
            order = ("off", "on") if (turn % 2 == 0) ^ flip else ("on", "off")
            row: dict[str, float] = {}
            for mode in order:
                if mode == "off":
                    ms, finished, _ = await one_token_turn(engine, history, None, 0)
                    row["off"] = ms
                    del finished  # its cache is released with it
                else:
                    ms, finished, text = await one_token_turn(engine, history, state, prefix_items)
                    row["on"], row["cached"], row["input"] = (
                        ms,
                        finished.usage.cached_tokens,
                        finished.usage.input_tokens,
                    )
                    on_result = (finished, text)
            samples[turn] = row
            finished, text = on_result
        else:
            _, finished, text = await one_token_turn(engine, history, state, prefix_items)
        state = finished.render
        # the random model cannot choose a tool, so the script appends the call an agent would have made
        output: list[InputItem] = [Message(role="assistant", content=[OutputText(text=text)])] if text else []
        call = FunctionCall(
            call_id=f"call_{turn}", name="shell", arguments=json.dumps({"cmd": f"grep -n {turn}"})
        )
        result = FunctionCallOutput(call_id=call.call_id, output=tool_output(engine, turn, tool_tokens))
        history = history.extend(output)
        prefix_items = history.length
        history = history.extend([call, result])
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="loopwire bench local", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--turns", default="1,10,30", help="the turns to measure (default: %(default)s)")
    parser.add_argument("--conversations", type=int, default=3)
    parser.add_argument("--tool-tokens", type=int, default=250)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--intermediate", type=int, default=1408)
    parser.add_argument("--model", help="an existing model directory or GGUF file instead of a random one")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="auto", choices=list(DTYPES))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    measured = {int(turn) for turn in args.turns.split(",")}
    with tempfile.TemporaryDirectory(prefix="loopwire-bench-") as scratch:
        if args.model:
            model_dir = Path(args.model)
        else:
            model_dir = build_model_dir(
                Path(scratch) / "model",
                hidden_size=args.hidden,
                layers=args.layers,
                heads=args.hidden // 64,
                kv_heads=2,
                intermediate_size=args.intermediate,
                max_positions=32768,
            )
        settings = LocalSettings(model=str(model_dir), device=args.device, dtype=args.dtype)
        engine = LocalEngine(settings)  # a directory or a GGUF file
        params = sum(parameter.numel() for parameter in engine.loaded.model.parameters())
        weights = next(engine.loaded.model.parameters())
        print(
            f"model: {model_dir.name}, {params / 1e6:.1f}M parameters, {weights.device} {weights.dtype}",
            file=sys.stderr,
        )
        warm = EMPTY_CONTEXT.extend([Message(role="user", content="warm up")])
        asyncio.run(one_token_turn(engine, warm, None, 0))  # first-call allocations stay out of turn 1
        rows: dict[int, list[dict[str, float]]] = {turn: [] for turn in measured}
        for number in range(args.conversations):
            started = time.perf_counter()
            samples = asyncio.run(
                conversation(engine, measured, max(measured), args.tool_tokens, number % 2 == 1)
            )
            for turn, row in samples.items():
                rows[turn].append(row)
            print(f"conversation {number + 1}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    print("\n| turn | input tokens | cached (on) | TTFT on, ms | TTFT off, ms | off/on |")
    print("|---:|---:|---:|---:|---:|---:|")
    summary: dict[str, dict[str, float]] = {}
    for turn in sorted(measured):
        on = statistics.median(row["on"] for row in rows[turn])
        off = statistics.median(row["off"] for row in rows[turn])
        tokens = statistics.median(row["input"] for row in rows[turn])
        cached = statistics.median(row["cached"] for row in rows[turn])
        summary[str(turn)] = {"input_tokens": tokens, "cached": cached, "on_ms": on, "off_ms": off}
        print(f"| {turn} | {tokens:.0f} | {cached:.0f} | {on:.0f} | {off:.0f} | {off / on:.1f}x |")
    if args.json:
        args.json.write_text(json.dumps({"params": params, "turns": summary}, indent=2))
    return 0
