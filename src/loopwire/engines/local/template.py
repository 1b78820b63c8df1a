"""Chat messages into prompt text and token ids: the tokenizer's chat template, or loopwire's ChatML one.

Owns the choice of template (the model's own; loopwire's Hermes-style ChatML when the model ships none, or
when tools are offered and the model's own template cannot show them, as SmolLM2's), the stop markers and
tokenization; must not run the model or hold KV state.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from importlib import resources
from typing import Any, cast

from ..common.chat_messages import ChatMessage


def load_template(name: str) -> str:
    """A Jinja chat template shipped in this package's templates/ folder."""
    return (resources.files(__package__) / "templates" / f"{name}.jinja").read_text(encoding="utf-8")


PLAIN_TEMPLATE = load_template("plain")
"""ChatML with Hermes-style tools, for a tokenizer that ships no chat template."""

PLAIN_END_MARKER = "<|im_end|>"
TOOL_CALL_OPEN = "<tool_call>"


class Template:
    """Renders with one tokenizer. The tokenizer is shared by the worker thread and count_tokens on the
    event loop; a fast tokenizer may refuse concurrent use, so calls hold a lock."""

    def __init__(self, tokenizer: Any, source: str | None = None) -> None:
        self.tokenizer = tokenizer
        own = source if source is not None else getattr(tokenizer, "chat_template", None)
        self.source: str = own if isinstance(own, str) and own else PLAIN_TEMPLATE
        self.plain = self.source is PLAIN_TEMPLATE
        self.own_tools = TOOL_CALL_OPEN in self.source
        """The model's template shows tools itself; else a turn with tools renders with PLAIN_TEMPLATE."""
        self._lock = threading.Lock()
        self.special = tuple(sorted(_split_tokens(tokenizer), key=len, reverse=True))
        """Added tokens the tokenizer splits the text on before anything else (token-boundary checks)."""

    def source_for(self, tools: Sequence[dict[str, Any]]) -> str:
        return PLAIN_TEMPLATE if tools and not self.own_tools else self.source

    def text(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]], *, generate: bool
    ) -> str:
        with self._lock:
            rendered = self.tokenizer.apply_chat_template(
                list(messages),
                tools=list(tools) or None,
                chat_template=self.source_for(tools),
                add_generation_prompt=generate,
                tokenize=False,
            )
        return cast(str, rendered)

    def encode(self, text: str) -> list[int]:
        """The template writes any BOS itself, so the tokenizer adds no special tokens."""
        with self._lock:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return list(ids)

    def ids(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]], *, generate: bool
    ) -> list[int]:
        return self.encode(self.text(messages, tools, generate=generate))

    def decode(self, ids: Sequence[int]) -> str:
        with self._lock:
            return cast(str, self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def stop_ids(self, extra: Sequence[int]) -> frozenset[int]:
        """End-of-turn tokens: the tokenizer's EOS, the model's generation-config EOS ids (`extra`), and the
        ChatML end marker when it is one token."""
        stops = set(extra)
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if isinstance(eos, int):
            stops.add(eos)
        with self._lock:
            marker = self.tokenizer.convert_tokens_to_ids(PLAIN_END_MARKER)
            unk = getattr(self.tokenizer, "unk_token_id", None)
        if isinstance(marker, int) and marker != unk:
            stops.add(marker)
        return frozenset(stops)


def _split_tokens(tokenizer: Any) -> set[str]:
    """Added tokens that cut the text wherever they occur (no whitespace stripping around them)."""
    decoder = getattr(tokenizer, "added_tokens_decoder", None)
    if not isinstance(decoder, dict):
        return set()
    found: set[str] = set()
    for token in decoder.values():
        content = getattr(token, "content", None)
        if (
            isinstance(content, str)
            and content
            and not getattr(token, "lstrip", False)
            and not getattr(token, "rstrip", False)
            and not getattr(token, "single_word", False)
        ):
            found.add(content)
    return found
