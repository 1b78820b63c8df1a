"""Per-turn prompt render time of the local engine vs history length, with the lane's rendered-token cache
(render and tokenize only the new items) and without it (template + tokenize the whole conversation), on a
real tokenizer and a coding conversation whose tool outputs are this repository's own source files.

Every turn adds the model's output (a short sentence and a read_file call) and the call's output (a real
file under src/). At each target history length the next --turns turns are rendered both ways, in
alternating order, and the ids are checked equal. Times are medians in ms; the model itself never runs.

    python bench/render_cache.py --model FILE.gguf|DIR [--targets 1000,8000,32000,120000] [--turns 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from loopwire.engines.base import ToolSpec
from loopwire.engines.local.render_cache import IncrementalRenderer, Rendered, RenderedPrefix
from loopwire.engines.local.template import Template
from loopwire.protocol.items import FunctionCall, FunctionCallOutput, InputItem, Message

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTIONS = "You are a coding agent. Read the code, find the bug, fix it."
TOOLS = (
    ToolSpec(
        "read_file",
        "Read a file of the repository.",
        {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    ),
)


def load_tokenizer(model: str) -> object:
    from transformers import AutoTokenizer

    path = model
    if model.endswith(".gguf"):
        from loopwire.engines.local.gguf import converted

        path = str(converted(model))
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def turn_items(n: int, files: list[Path]) -> list[InputItem]:
    source = files[n % len(files)]
    call_id = f"call_{n}"
    relative = source.relative_to(ROOT)
    return [  # the model's output (a sentence and a call), then the tool's output
        Message(role="assistant", content=f"Let me read {relative.name}."),
        FunctionCall(call_id=call_id, name="read_file", arguments=f'{{"path": "{relative}"}}', id=f"fc_{n}"),
        FunctionCallOutput(call_id=call_id, output=source.read_text()),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="a GGUF file or a model directory (for its tokenizer)")
    parser.add_argument("--targets", default="1000,8000,32000,120000")
    parser.add_argument("--turns", type=int, default=7, help="turns measured at each target")
    args = parser.parse_args()
    targets = [int(value) for value in args.targets.split(",")]
    template = Template(load_tokenizer(args.model))
    cached = IncrementalRenderer(template)
    cached.warm()
    full = IncrementalRenderer(template, enabled=False)
    files = sorted((ROOT / "src").rglob("*.py"))
    history: list[InputItem] = [Message(role="user", content="The local engine tests fail. Find out why.")]
    parent: RenderedPrefix | None = None
    parent_ids: list[int] = []
    turn = 0

    def step(measure: bool, flip: bool) -> tuple[float, float]:
        nonlocal parent, parent_ids, turn
        history.extend(turn_items(turn, files))
        turn += 1
        timings = {"cached": 0.0, "full": 0.0}
        results: dict[str, Rendered] = {}
        order = ("full", "cached") if flip else ("cached", "full")
        for name in order if measure else ("cached",):
            renderer = cached if name == "cached" else full
            started = time.perf_counter()
            results[name] = renderer.render(
                history, INSTRUCTIONS, TOOLS, generate=True, parent=parent, parent_ids=parent_ids
            )
            timings[name] = (time.perf_counter() - started) * 1000.0
        step_result = results["cached"]
        if measure:
            assert step_result.prompt == results["full"].prompt, f"turn {turn}: the ids differ"
        assert step_result.prefix is not None
        parent, parent_ids = step_result.prefix, step_result.prompt
        return timings["cached"], timings["full"]

    step(False, False)
    print(f"tokenizer {args.model}; template: loopwire's Hermes ChatML (tools); {len(files)} source files")
    print(f"{'history tokens':>14} {'delta tokens':>13} {'cached ms':>10} {'full ms':>9} {'full/cached':>12}")
    for target in targets:
        while len(parent_ids) < target:
            step(False, False)
        cached_ms: list[float] = []
        full_ms: list[float] = []
        deltas: list[int] = []
        start_tokens = len(parent_ids)
        for index in range(args.turns):
            before = len(parent_ids)
            c, f = step(True, index % 2 == 1)
            cached_ms.append(c)
            full_ms.append(f)
            deltas.append(len(parent_ids) - before)
        c_med, f_med = statistics.median(cached_ms), statistics.median(full_ms)
        print(
            f"{start_tokens:>14} {int(statistics.median(deltas)):>13} {c_med:>10.1f} {f_med:>9.1f}"
            f" {f_med / c_med:>11.1f}x"
        )
    print("render counts:", dict(cached.counts))


if __name__ == "__main__":
    main()
