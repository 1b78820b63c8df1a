"""Responses items into the message list of a chat model: the one walk every chat-shaped engine shares.

Owns the grouping rule (instructions as a leading system message; an assistant message and the function
and custom tool calls after it as one assistant message, as the model produced them in one turn; reasoning
carried to the assistant message it precedes; hosted tools' items left out) and the memo of encoded
messages by item identity. Must not decide how one item looks (roles, content parts, argument forms: each
engine's `ChatForm`) nor do I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from ...protocol.items import (
    Compaction,
    CustomToolCall,
    CustomToolCallOutput,
    FunctionCall,
    FunctionCallOutput,
    InputItem,
    ItemReference,
    Message,
    Reasoning,
)
from ..base import EngineError

ChatMessage = dict[str, Any]

StandaloneItem = Message | FunctionCallOutput | CustomToolCallOutput | Compaction
"""Items whose chat message depends on the item (and the engine's settings) alone: never an assistant
message, which takes reasoning and the function calls that follow it."""
ToolCallItem = FunctionCall | CustomToolCall
"""Calls a chat model makes as `tool_calls` of an assistant message (a custom tool is offered as a
function: common/tool_names.py)."""
CachedItem = StandaloneItem | ToolCallItem

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class ChatForm:
    """How one engine writes each kind of item as chat (plain functions: the walk calls them per item)."""

    standalone: Callable[[StandaloneItem], ChatMessage]
    """A user, system or developer message, a tool output or a compaction (never role `assistant`)."""
    assistant: Callable[[Message], ChatMessage]
    """An assistant message, before reasoning or function calls join it."""
    tool_call: Callable[[ToolCallItem], dict[str, Any]]
    """A function (or custom tool) call's entry in its assistant message's `tool_calls`."""
    reasoning: Callable[[Reasoning], str] | None
    """The text a reasoning item carries to the assistant message after it; None drops reasoning items."""
    reasoning_field: str = "reasoning_content"
    """The assistant message's field that takes that text."""


class MessageCache:
    """The encoded chat message of each standalone item (and the encoded `tool_calls` entry of each function
    call), by item identity, least recently used first.

    Protocol items are immutable once they are in a Context, and a lane's next turn (and every fork of it)
    passes the very same objects again, so identity is the key: no hashing or comparing of content. Each
    entry holds its item, so the id cannot be reused by another object while the entry lives, and a lookup
    still checks identity. Bounded by `max_bytes` of encoded JSON (the items held are about as large
    again, and are usually held by the lanes' contexts anyway); the least recently used entries go first.
    An engine's form is fixed for the cache's life, and instructions and tools are never part of an entry."""

    __slots__ = ("_entries", "hits", "max_bytes", "misses", "size")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0  # encoded bytes held
        self.hits = 0
        self.misses = 0
        # id(item) -> (item, its encoded JSON, whether it is a function call's `tool_calls` entry)
        self._entries: OrderedDict[int, tuple[CachedItem, msgspec.Raw, bool]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, item: CachedItem) -> msgspec.Raw | None:
        key = id(item)
        entry = self._entries.get(key)
        if entry is None or entry[0] is not item:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, item: CachedItem, raw: msgspec.Raw) -> None:
        size = len(raw)
        if size > self.max_bytes:
            return
        key = id(item)
        previous = self._entries.pop(key, None)
        if previous is not None:
            self.size -= len(previous[1])
        self._entries[key] = (item, raw, isinstance(item, FunctionCall | CustomToolCall))
        self.size += size
        while self.size > self.max_bytes:
            _, (_, evicted, _) = self._entries.popitem(last=False)
            self.size -= len(evicted)

    def keep(self, item: CachedItem, message: dict[str, Any]) -> msgspec.Raw:
        """A message just built for `item`, encoded and remembered (a miss)."""
        raw = msgspec.Raw(_encode(message))
        self.put(item, raw)
        self.misses += 1
        return raw

    def clear(self) -> None:
        self._entries.clear()
        self.size = 0


_NO_ENTRIES: OrderedDict[int, tuple[CachedItem, msgspec.Raw, bool]] = OrderedDict()
"""What a walk without a cache binds its lookups to: always empty, never written nor consulted."""


def _as_is(item: CachedItem, message: dict[str, Any]) -> dict[str, Any]:
    return message


def chat_messages(
    history: Iterable[InputItem], instructions: str | None, form: ChatForm, cache: MessageCache | None = None
) -> list[ChatMessage | msgspec.Raw]:
    """The chat `messages` for a turn: `instructions` (sent per request, never inherited) as a leading
    system message, then every item. Without `cache` every message is a dict. With it, every message that
    stands for one item alone (the bulk of an agent's history) and every function call's `tool_calls`
    entry is the item's encoded JSON (msgspec.Raw), built and encoded only the first time the item is seen:
    encoding the result gives exactly the bytes that encoding the cacheless result gives."""
    messages: list[ChatMessage | msgspec.Raw] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    open_assistant: ChatMessage | None = None  # the assistant message later calls are merged into
    reasoning: list[str] = []  # reasoning text waiting for the assistant message it precedes
    field = form.reasoning_field
    memo = cache is not None
    entries = _NO_ENTRIES if cache is None else cache._entries
    keep: Callable[[CachedItem, dict[str, Any]], ChatMessage | msgspec.Raw] = (
        _as_is if cache is None else cache.keep
    )
    lookup, touch, append = entries.get, entries.move_to_end, messages.append
    standalone, assistant, tool_call, reasoning_of = (
        form.standalone,
        form.assistant,
        form.tool_call,
        form.reasoning,
    )
    hits = 0
    for item in history:
        if memo:
            key = id(item)
            entry = lookup(key)
            if entry is not None and entry[0] is item:  # the fast path of every turn after the first
                touch(key)
                hits += 1
                if not entry[2]:
                    open_assistant = None
                    append(entry[1])
                elif open_assistant is None and not reasoning:  # the same keys in the same order
                    open_assistant = {"role": "assistant", "content": "", "tool_calls": [entry[1]]}
                    append(open_assistant)
                else:
                    if open_assistant is None:
                        open_assistant = {"role": "assistant", "content": ""}
                        append(open_assistant)
                    _attach_reasoning(open_assistant, reasoning, field)
                    open_assistant.setdefault("tool_calls", []).append(entry[1])
                continue
        if isinstance(item, FunctionCall | CustomToolCall):
            if open_assistant is None:
                open_assistant = {"role": "assistant", "content": ""}
                append(open_assistant)
            _attach_reasoning(open_assistant, reasoning, field)
            open_assistant.setdefault("tool_calls", []).append(keep(item, tool_call(item)))
            continue
        if isinstance(item, Reasoning):
            if reasoning_of is not None:
                text = reasoning_of(item)
                if text:
                    reasoning.append(text)
            continue  # does not break a merge: reasoning sits between a message and its calls
        open_assistant = None
        if isinstance(item, Message) and item.role == "assistant":
            message = assistant(item)
            _attach_reasoning(message, reasoning, field)
            open_assistant = message
            append(message)
        elif isinstance(item, Message | FunctionCallOutput | CustomToolCallOutput | Compaction):
            append(keep(item, standalone(item)))
        elif isinstance(item, ItemReference):
            raise EngineError(
                f"item_reference {item.id!r} reached the engine unresolved", code="server_error"
            )
        # any other item (a hosted tool's call or output, an MCP item, ...) was run by some provider, not
        # by this model: a chat has no message for it
    if cache is not None:
        cache.hits += hits
    return messages


def _attach_reasoning(message: ChatMessage, reasoning: list[str], field: str) -> None:
    if not reasoning:
        return
    earlier = message.get(field)
    message[field] = "\n".join([earlier, *reasoning] if earlier else reasoning)
    reasoning.clear()
