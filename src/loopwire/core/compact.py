"""`/v1/responses/compact`: shrink a conversation to its user messages plus one compaction item.

Summarises by keeping the head and tail of everything else (no model call); owns no storage.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..protocol import ids
from ..protocol.compaction import decode_summary, encode_summary
from ..protocol.context import EMPTY_CONTEXT
from ..protocol.items import (
    Compaction,
    FunctionCall,
    FunctionCallOutput,
    InputItem,
    ItemReference,
    Message,
    Reasoning,
    text_of,
)
from ..protocol.request import CompactRequest
from ..protocol.response import CompactedResponse, usage_of
from .cache import CachedResponse

SUMMARY_HEAD_CHARS = 2_000
SUMMARY_TAIL_CHARS = 6_000
CHARS_PER_TOKEN = 4
"""Compaction makes no model call, so its usage is an estimate at four characters per token."""


def _describe(item: InputItem) -> str | None:
    if isinstance(item, Message):
        return f"[{item.role}] {text_of(item.content)}"
    if isinstance(item, FunctionCall):
        return f"[call {item.name}({item.arguments}) id={item.call_id}]"
    if isinstance(item, FunctionCallOutput):
        return f"[output of {item.call_id}] {text_of(item.output)}"
    if isinstance(item, Reasoning):
        return None
    if isinstance(item, Compaction):
        return decode_summary(item.encrypted_content)
    if isinstance(item, ItemReference):
        return None
    return None


def shorten(text: str, head: int = SUMMARY_HEAD_CHARS, tail: int = SUMMARY_TAIL_CHARS) -> str:
    """The first `head` and last `tail` characters of `text`, with a marker for what lies between."""
    if len(text) <= head + tail:
        return text
    omitted = len(text) - head - tail
    ending = text[-tail:] if tail else ""
    return f"{text[:head]}\n[... {omitted} characters compacted ...]\n{ending}"


def summary_of(items: Iterable[InputItem]) -> str:
    """Every item this server can describe, one line each (user messages included), in order."""
    return "\n".join(line for line in map(_describe, items) if line is not None)


def compact_context(request: CompactRequest, parent: CachedResponse | None, *, now: int) -> CompactedResponse:
    context = parent.context if parent is not None else EMPTY_CONTEXT
    new_items: list[InputItem] = []
    if isinstance(request.input, str):
        new_items = [Message(role="user", content=request.input)]
    elif request.input is not None:
        new_items = list(request.input)
    kept: list[Message] = []
    summarised: list[str] = []
    total_chars = 0
    for item in [*context, *new_items]:
        described = _describe(item)
        if described is not None:
            total_chars += len(described)
        if isinstance(item, Message) and item.role == "user":
            kept.append(Message(role="user", content=item.content, id=item.id or ids.message_id()))
        elif described is not None:
            summarised.append(described)
    summary = shorten("\n".join(summarised))
    compaction = Compaction(encrypted_content=encode_summary(summary), id=ids.new_id("cmp"))
    output: list[Message | Compaction] = [*kept, compaction]
    input_tokens = total_chars // CHARS_PER_TOKEN
    output_tokens = len(summary) // CHARS_PER_TOKEN
    return CompactedResponse(
        id=ids.new_id("resp_cmp"),
        created_at=now,
        output=list(output),
        usage=usage_of(input_tokens, 0, output_tokens),
    )
