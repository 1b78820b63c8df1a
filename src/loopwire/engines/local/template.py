"""Chat messages into prompt text and token ids: the tokenizer's chat template, or a plain ChatML one.

Owns the fallback template, the stop markers and tokenization; must not run the model or hold KV state.
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

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        own = getattr(tokenizer, "chat_template", None)
        self.source: str = own if isinstance(own, str) and own else PLAIN_TEMPLATE
        self.plain = self.source is PLAIN_TEMPLATE
        self.supports_tools = TOOL_CALL_OPEN in self.source
        self._lock = threading.Lock()

    def text(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]], *, generate: bool
    ) -> str:
        with self._lock:
            rendered = self.tokenizer.apply_chat_template(
                list(messages),
                tools=list(tools) or None,
                chat_template=self.source,
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
