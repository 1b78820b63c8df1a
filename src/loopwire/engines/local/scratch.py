"""Model directories made from nothing: a BPE tokenizer trained on a small corpus and a randomly
initialised Qwen2-style model, saved like a real checkpoint (for tests, benchmarks and demos).

Owns building and teaching such directories; must never download anything, and is not used when serving.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .template import load_template

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
ADDED_TOKENS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")

QWEN_STYLE_TEMPLATE = load_template("qwen_style")
"""The shape of Qwen2.5's template (Hermes tool calls), written out in templates/ so nothing is fetched."""

_CORPUS = (
    "You are a helpful assistant. Answer the user's question, call a tool when it helps.",
    "What is the weather in Paris? It is sunny and 21 degrees. Tomorrow it will rain in London.",
    "def read_file(path): return open(path).read()  # the quick brown fox jumps over the lazy dog",
    '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}} {"type": "function"}',
    "The tests passed: 42 passed, 0 failed in 1.23s. Traceback (most recent call last): Error",
    "src/loopwire/engines/local/engine.py | 120 ++++ README.md | 4 +- 2 files changed",
    "Hello there, friend. How can I help you today? Sure, here is the summary you asked for.",
)


def corpus(extra: Sequence[str] = ()) -> list[str]:
    lines = list(_CORPUS) + list(extra)
    return lines * 8


def build_tokenizer(vocab_size: int = 1024, extra_corpus: Sequence[str] = ()) -> Any:
    """A byte-level BPE (like GPT-2 and Qwen) trained on a small corpus, with ChatML special tokens, the
    Hermes markers as single added tokens, and the Qwen-style chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(extra_corpus), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    wrapped.add_tokens(list(ADDED_TOKENS))
    wrapped.chat_template = QWEN_STYLE_TEMPLATE
    return wrapped


def build_model_dir(
    directory: Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate_size: int = 128,
    max_positions: int = 4096,
    vocab_size: int = 1024,
    seed: int = 0,
    chat_template: bool = True,
) -> Path:
    """Save a tokenizer and a randomly initialised Qwen2 causal LM (float32, safetensors) to `directory`."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size)
    if not chat_template:
        tokenizer.chat_template = None
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,  # tied, a random model mostly repeats its last token
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = eos
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def parameter_count(directory: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(directory / "model.safetensors"), framework="pt") as weights:
        for name in weights.keys():  # noqa: SIM118 -- safe_open is not a mapping
            total += _numel(weights, name)
    return total


def _numel(weights: Any, name: str) -> int:
    count = 1
    for size in weights.get_slice(name).get_shape():
        count *= int(size)
    return count


def teach(
    directory: Path, examples: Sequence[tuple[str, str]], *, steps: int = 200, lr: float = 1e-2
) -> None:
    """Train the model in `directory` (in place) to answer each prompt text with its reply text and then
    the end-of-turn token, so tests can see a real model produce a chosen output (a tool call)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, dtype=torch.float32)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    batch: list[tuple[Any, Any]] = []
    for prompt, reply in examples:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        reply_ids = [*tokenizer(reply, add_special_tokens=False)["input_ids"], eos]
        ids = torch.tensor([prompt_ids + reply_ids])
        labels = torch.tensor([[-100] * len(prompt_ids) + reply_ids])
        batch.append((ids, labels))
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        for ids, labels in batch:
            loss = model(input_ids=ids, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.train(False)
    model.save_pretrained(directory)
    (directory / "taught.json").write_text(json.dumps({"examples": len(examples), "steps": steps}))
