"""Token estimates for when the upstream reports no usage, and for counting input without a model call.

Owns the estimating rule (four UTF-8 bytes a token, plus a small per-message overhead); must not pretend to
be the upstream's tokenizer: every number here is labelled an estimate where it is used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from ...protocol.items import FunctionCall, FunctionCallOutput, InputItem, Message, text_of

BYTES_PER_TOKEN = 4
"""The usual size of a BPE token for English text and code; the same rule `core/compact.py` uses."""
TOKENS_PER_MESSAGE = 4
"""A chat template spends a few tokens per message on role markers and separators."""
REPLY_PRIMER_TOKENS = 3
"""The assistant header the template opens for the reply."""

_encode = msgspec.json.Encoder().encode


def _tokens(byte_count: int) -> int:
    return -(-byte_count // BYTES_PER_TOKEN)


def estimate_input_tokens(messages: Iterable[Mapping[str, Any]], tools: Iterable[Any] = ()) -> int:
    """Roughly what the upstream will count for this prompt: message contents and tool calls by size,
    the tool schemas by the size of their JSON, and the template's per-message overhead."""
    total_bytes = 0
    count = 0
    for message in messages:
        count += 1
        content = message.get("content")
        if isinstance(content, str):
            total_bytes += len(content.encode("utf-8"))
        elif content:
            total_bytes += len(_encode(content))
        for call in message.get("tool_calls") or ():
            function = call.get("function", {})
            total_bytes += len(str(function.get("name", "")).encode("utf-8"))
            total_bytes += len(str(function.get("arguments", "")).encode("utf-8"))
    tools = list(tools)
    if tools:
        total_bytes += len(_encode(tools))
    return _tokens(total_bytes) + count * TOKENS_PER_MESSAGE + REPLY_PRIMER_TOKENS


def estimate_output_tokens(output_chunks: int, output_bytes: int) -> int:
    """Servers stream about one chunk per generated token, except where they batch (a tool call sent
    whole, as llama.cpp and Ollama do): the larger of the chunk count and the size rule."""
    return max(output_chunks, _tokens(output_bytes))


def plain_messages(history: Iterable[InputItem], instructions: str | None) -> list[dict[str, str]]:
    """The conversation as plain-text messages, for counting what cannot be translated exactly."""
    messages = [{"content": instructions}] if instructions else []
    for item in history:
        if isinstance(item, Message):
            messages.append({"content": text_of(item.content)})
        elif isinstance(item, FunctionCall):
            messages.append({"content": item.name + item.arguments})
        elif isinstance(item, FunctionCallOutput):
            messages.append({"content": text_of(item.output)})
    return messages
