"""`loopwire bench grammar`: structured-generation libraries on a real vocabulary: compile time of a
forced tool call's grammar and the per-token mask cost, for xgrammar, llguidance and outlines-core, side
by side in one run.

The grammar is what the local engine needs for `tool_choice` naming a tool: `<tool_call>\\n`, a JSON object
{"name": <that tool>, "arguments": <its parameters schema>}, `\\n</tool_call>`. Each library walks the same
valid call token by token (SmolLM2's tokenization of it); per token it computes the allowed-token mask
(timed) and accepts the token. Compile times are medians of fresh compiles (caches off); "cached compile"
is xgrammar's compiler asked again for a grammar it has compiled (a lane forcing the same tool every turn);
"call total" is a cold compile plus every mask of the call.

Owns this measurement; needs the [local] extra and the two libraries loopwire does not use
(pip install 'loopwire[grammar-bench]'), imported only when it runs.

    loopwire bench grammar --model FILE.gguf|DIR [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from .render_cache import model_dir

TOOL_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "path": {"type": "string"},
        "old": {"type": "string"},
        "new": {"type": "string"},
        "line": {"type": "integer"},
        "mode": {"enum": ["replace", "insert", "delete"]},
    },
    "required": ["path", "old", "new", "line", "mode"],
    "additionalProperties": False,
}
CALL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"const": "edit_file"}, "arguments": TOOL_PARAMETERS},
    "required": ["name", "arguments"],
    "additionalProperties": False,
}
OPEN, CLOSE = "<tool_call>\n", "\n</tool_call>"
VALID = (
    OPEN
    + json.dumps(
        {
            "name": "edit_file",
            "arguments": {
                "path": "src/loopwire/engines/local/engine.py",
                "old": "return self.render(request)",
                "new": "return self.rendered(request).prompt",
                "line": 57,
                "mode": "replace",
            },
        }
    )
    + CLOSE
)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000.0


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    samples, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - started)
    return median_ms(samples), result


def result(setup_ms: float, compile_ms: float, cached_ms: float, masks: list[float]) -> dict[str, float]:
    return {
        "setup_ms": setup_ms,
        "compile_ms": compile_ms,
        "cached_ms": cached_ms,
        "mask_ms": median_ms(masks),
        "total_ms": compile_ms + sum(masks) * 1e3,
    }


def run_xgrammar(tokenizer: Any, vocab: int, ids: list[int], repeat: int) -> dict[str, float]:
    import torch
    import xgrammar as xgr

    setup_ms, info = timed(lambda: xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab), 1)

    def compile_once() -> Any:
        compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        grammar = xgr.Grammar.concat(
            xgr.Grammar.from_ebnf(f"root ::= {json.dumps(OPEN)}"),
            xgr.Grammar.from_json_schema(json.dumps(CALL_SCHEMA), any_whitespace=False),
            xgr.Grammar.from_ebnf(f"root ::= {json.dumps(CLOSE)}"),
        )
        return compiler.compile_grammar(grammar)

    compile_ms, compiled = timed(compile_once, repeat)
    cached = xgr.GrammarCompiler(info, max_threads=1)
    schema = json.dumps(CALL_SCHEMA)

    def compile_cached() -> Any:
        grammar = xgr.Grammar.concat(
            xgr.Grammar.from_ebnf(f"root ::= {json.dumps(OPEN)}"),
            xgr.Grammar.from_json_schema(schema, any_whitespace=False),
            xgr.Grammar.from_ebnf(f"root ::= {json.dumps(CLOSE)}"),
        )
        return cached.compile_grammar(grammar)

    compile_cached()
    cached_ms, _ = timed(compile_cached, repeat)
    matcher = xgr.GrammarMatcher(compiled)
    bitmask = xgr.allocate_token_bitmask(1, vocab)
    masks: list[float] = []
    for token in ids:
        started = time.perf_counter()
        matcher.fill_next_token_bitmask(bitmask)
        masks.append(time.perf_counter() - started)
        allowed = bool((bitmask[0, token // 32] >> (token % 32)) & 1)
        assert allowed and matcher.accept_token(token), f"xgrammar refused token {token}"
    del torch
    return result(setup_ms, compile_ms, cached_ms, masks)


def run_llguidance(tokenizer: Any, vocab: int, ids: list[int], repeat: int) -> dict[str, float]:
    import llguidance
    import llguidance.hf
    import llguidance.torch

    setup_ms, lltok = timed(lambda: llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab), 1)
    lark = f"start: {json.dumps(OPEN)} call {json.dumps(CLOSE)}\ncall: %json {json.dumps(CALL_SCHEMA)}\n"

    def compile_once() -> Any:
        matcher = llguidance.LLMatcher(lltok, llguidance.grammar_from("lark", lark))
        assert not matcher.is_error(), matcher.get_error()
        bitmask = llguidance.torch.allocate_token_bitmask(1, vocab)
        llguidance.torch.fill_next_token_bitmask(matcher, bitmask, 0)  # the first mask finishes the setup
        return matcher

    compile_ms, _ = timed(compile_once, repeat)
    matcher = llguidance.LLMatcher(lltok, llguidance.grammar_from("lark", lark))
    bitmask = llguidance.torch.allocate_token_bitmask(1, vocab)
    masks: list[float] = []
    for token in ids:
        started = time.perf_counter()
        llguidance.torch.fill_next_token_bitmask(matcher, bitmask, 0)
        masks.append(time.perf_counter() - started)
        assert matcher.consume_token(token), f"llguidance refused token {token}: {matcher.get_error()}"
    return result(setup_ms, compile_ms, float("nan"), masks)


def outlines_vocabulary(tokenizer: Any) -> Any:
    from outlines_core import Vocabulary
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    to_byte = {char: byte for byte, char in bytes_to_unicode().items()}  # type: ignore[no-untyped-call]
    special = set(tokenizer.all_special_ids)
    tokens: dict[bytes, list[int]] = {}
    for token, index in tokenizer.get_vocab().items():
        if index in special:
            continue
        tokens.setdefault(bytes(to_byte[char] for char in token), []).append(index)
    return Vocabulary(tokenizer.eos_token_id, tokens)


def run_outlines(tokenizer: Any, vocab: int, ids: list[int], repeat: int) -> dict[str, float]:
    from outlines_core import Guide, Index
    from outlines_core.json_schema import build_regex_from_schema
    from outlines_core.kernels.torch import allocate_token_bitmask

    setup_ms, vocabulary = timed(lambda: outlines_vocabulary(tokenizer), 1)
    regex = re.escape(OPEN) + build_regex_from_schema(json.dumps(CALL_SCHEMA)) + re.escape(CLOSE)
    compile_ms, index = timed(lambda: Index(regex, vocabulary), repeat)
    guide = Guide(index)
    bitmask = allocate_token_bitmask(vocab)
    masks: list[float] = []
    for token in ids:
        started = time.perf_counter()
        guide.write_mask_into(bitmask.data_ptr(), bitmask.numel(), bitmask.element_size())
        masks.append(time.perf_counter() - started)
        guide.advance(token)
    return result(setup_ms, compile_ms, float("nan"), masks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="loopwire bench grammar",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="a GGUF file or a model directory (its tokenizer)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--libraries", nargs="+", default=["xgrammar", "llguidance", "outlines-core"])
    args = parser.parse_args(argv)
    from transformers import AutoConfig, AutoTokenizer

    directory = model_dir(args.model)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    vocab = AutoConfig.from_pretrained(directory, local_files_only=True).vocab_size
    ids = tokenizer(VALID, add_special_tokens=False)["input_ids"]
    runners = {"xgrammar": run_xgrammar, "llguidance": run_llguidance, "outlines-core": run_outlines}
    print(f"vocabulary {vocab} tokens; the valid call is {len(ids)} tokens; compile median of {args.repeat}")
    print(
        f"{'library':<14} {'vocab setup ms':>15} {'compile ms':>11} {'cached compile ms':>18}"
        f" {'mask us/token':>14} {'call total ms':>14}"
    )
    for name in args.libraries:
        row = runners[name](tokenizer, vocab, ids, args.repeat)
        print(
            f"{name:<14} {row['setup_ms']:>15.1f} {row['compile_ms']:>11.1f} {row['cached_ms']:>18.2f}"
            f" {row['mask_ms'] * 1000:>14.1f} {row['total_ms']:>14.1f}"
        )
    return 0
