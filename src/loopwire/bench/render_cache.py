"""`loopwire bench render`: per-turn prompt render time of the local engine vs history length, with the
lane's rendered-token cache (render and tokenize only the new items) and without it (template + tokenize
the whole conversation), on a real tokenizer and a coding conversation whose tool outputs are this
repository's own source files.

Every turn adds the model's output (a short sentence and a read_file call) and the call's output (a real
file under src/). At each target history length, --turns candidate next turns (each a different file)
are rendered from the same lane state both ways, in alternating order, and the ids are checked equal;
the last column is the floor, tokenizing the new file alone. Times are medians in ms; the model never runs.

Owns this measurement; needs the [local] extra (transformers), imported only when it runs.

    loopwire bench render --model FILE.gguf|DIR [--targets 1000,8000,32000,120000] [--turns 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..engines.base import ToolSpec
from ..engines.local.render_cache import IncrementalRenderer, Rendered, RenderedPrefix
from ..engines.local.template import Template
from ..protocol.items import FunctionCall, FunctionCallOutput, InputItem, Message

ROOT = Path(__file__).resolve().parents[3]
"""The repository (or site-packages) the conversation's files come from: its src/ tree."""
INSTRUCTIONS = "You are a coding agent. Read the code, find the bug, fix it."
TOOLS = (
    ToolSpec(
        "read_file",
        "Read a file of the repository.",
        {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    ),
)


def model_dir(model: str) -> str:
    """A model directory; a GGUF file is converted once into the cache (as the local engine does)."""
    if model.endswith(".gguf"):
        from ..engines.local.gguf import converted

        return str(converted(model))
    return model


def load_tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir(model), local_files_only=True)


def turn_items(n: int, files: list[Path]) -> list[InputItem]:
    source = files[n % len(files)]
    call_id = f"call_{n}"
    relative = source.relative_to(ROOT)
    return [  # the model's output (a sentence and a call), then the tool's output
        Message(role="assistant", content=f"Let me read {relative.name}."),
        FunctionCall(call_id=call_id, name="read_file", arguments=f'{{"path": "{relative}"}}', id=f"fc_{n}"),
        FunctionCallOutput(call_id=call_id, output=source.read_text()),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="loopwire bench render",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="a GGUF file or a model directory (for its tokenizer)")
    parser.add_argument("--targets", default="1000,8000,32000,120000")
    parser.add_argument("--turns", type=int, default=7, help="turns measured at each target")
    args = parser.parse_args(argv)
    targets = [int(value) for value in args.targets.split(",")]
    template = Template(load_tokenizer(args.model))
    cached = IncrementalRenderer(template)
    cached.warm()
    full = IncrementalRenderer(template, enabled=False)
    files = sorted((ROOT / "src").rglob("*.py")) or sorted(Path(__file__).resolve().parents[1].rglob("*.py"))
    history: list[InputItem] = [Message(role="user", content="The local engine tests fail. Find out why.")]
    parent: RenderedPrefix | None = None
    parent_ids: list[int] = []
    turn = 0

    def render(renderer: IncrementalRenderer, items: list[InputItem]) -> tuple[float, Rendered]:
        started = time.perf_counter()
        result = renderer.render(
            items, INSTRUCTIONS, TOOLS, generate=True, parent=parent, parent_ids=parent_ids
        )
        return (time.perf_counter() - started) * 1000.0, result

    def advance() -> None:
        nonlocal parent, parent_ids, turn
        history.extend(turn_items(turn, files))
        turn += 1
        _, result = render(cached, history)
        assert result.prefix is not None
        parent, parent_ids = result.prefix, result.prompt

    advance()
    print(f"tokenizer {args.model}; template: loopwire's Hermes ChatML (tools); {len(files)} source files")
    print(
        f"{'history tokens':>14} {'delta tokens':>13} {'cached ms':>10} {'full ms':>9} {'full/cached':>12}"
        f" {'tokenize delta alone ms':>24}"
    )
    for target in targets:
        while len(parent_ids) < target:
            advance()
        rows: list[tuple[float, float, float, int]] = []
        for index in range(args.turns):  # candidate next turns from the same state: the history stays put
            candidate = history + turn_items(turn + 1 + index, files)
            order = (full, cached) if index % 2 else (cached, full)
            timings = {}
            results = {}
            for renderer in order:
                timings[renderer], results[renderer] = render(renderer, candidate)
            assert results[cached].prompt == results[full].prompt, f"turn {turn}: the ids differ"
            output = candidate[-1]
            assert isinstance(output, FunctionCallOutput) and isinstance(output.output, str)
            started = time.perf_counter()
            template.encode(output.output)
            alone = (time.perf_counter() - started) * 1000.0
            rows.append(
                (timings[cached], timings[full], alone, len(results[cached].prompt) - len(parent_ids))
            )
        c_med = statistics.median(row[0] for row in rows)
        f_med = statistics.median(row[1] for row in rows)
        alone_med = statistics.median(row[2] for row in rows)
        delta = int(statistics.median(row[3] for row in rows))
        print(
            f"{len(parent_ids):>14} {delta:>13} {c_med:>10.1f} {f_med:>9.1f} {f_med / c_med:>11.1f}x"
            f" {alone_med:>24.1f}"
        )
    print("render counts:", dict(cached.counts))
    return 0
