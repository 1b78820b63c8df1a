"""Responses items and request fields into one chat-completions request (messages, tools, sampling).

Owns the mapping from the Responses shapes to the chat shapes; must not do I/O or read streamed chunks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from hashlib import blake2b
from typing import Any

import msgspec

from ...protocol.compaction import decode_summary
from ...protocol.items import (
    Compaction,
    ContentPart,
    FunctionCall,
    FunctionCallOutput,
    InputFile,
    InputImage,
    InputItem,
    InputText,
    ItemReference,
    Message,
    OutputText,
    Reasoning,
    Refusal,
)
from ..base import EngineError, EngineRequest, NamedToolChoice, ToolChoice, ToolSpec
from .settings import OpenAIChatSettings

ChatMessage = dict[str, Any]

COMPACTION_PREFIX = "Summary of the conversation so far:\n"
UNREADABLE_COMPACTION = "(an earlier part of the conversation was compacted)"
EMPTY_PARAMETERS: Mapping[str, Any] = {"type": "object", "properties": {}}
"""A function tool without parameters: the chat API reads an omitted schema the same way, but some
servers' tool parsers expect one."""

_encode = msgspec.json.Encoder().encode


def affinity_token(cache_key: str) -> str:
    """The opaque, stable form of a lane's cache key that goes upstream (the raw key names the owner)."""
    return blake2b(cache_key.encode("utf-8"), digest_size=16).hexdigest()


# -- messages ------------------------------------------------------------------------------------------


def build_wire_messages(
    history: Iterable[InputItem], instructions: str | None, settings: OpenAIChatSettings, cache: MessageCache
) -> list[ChatMessage | msgspec.Raw]:
    """build_messages for the wire, from `cache`: every message that stands for one item alone (user,
    system and developer messages, tool outputs, compactions: the bulk of an agent's history) and every
    function call's entry in its assistant message's `tool_calls` is the item's encoded JSON, translated
    and encoded only the first time the item is seen. Encoding the result gives exactly the bytes that
    encoding build_messages' result gives."""
    messages: list[ChatMessage | msgspec.Raw] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    open_assistant: ChatMessage | None = None
    reasoning: list[str] = []
    entries = cache._entries
    lookup, touch, append = entries.get, entries.move_to_end, messages.append
    hits = misses = 0
    for item in history:
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
                _attach_reasoning(open_assistant, reasoning, settings)
                open_assistant.setdefault("tool_calls", []).append(entry[1])
            continue
        if isinstance(item, FunctionCall):
            if open_assistant is None:
                open_assistant = {"role": "assistant", "content": ""}
                messages.append(open_assistant)
            _attach_reasoning(open_assistant, reasoning, settings)
            raw = msgspec.Raw(_encode(_tool_call(item)))
            cache.put(item, raw)
            misses += 1
            open_assistant.setdefault("tool_calls", []).append(raw)
            continue
        if isinstance(item, Reasoning):
            if settings.reasoning != "drop":
                text = reasoning_text(item)
                if text:
                    reasoning.append(text)
            continue
        open_assistant = None
        if isinstance(item, Message) and item.role == "assistant":
            message = _message(item, settings)
            _attach_reasoning(message, reasoning, settings)
            open_assistant = message
            messages.append(message)
        elif isinstance(item, Message | FunctionCallOutput | Compaction):
            raw = msgspec.Raw(_encode(_standalone(item, settings)))
            cache.put(item, raw)
            misses += 1
            messages.append(raw)
        elif isinstance(item, ItemReference):
            raise EngineError(
                f"item_reference {item.id!r} reached the engine unresolved", code="server_error"
            )
    cache.hits += hits
    cache.misses += misses
    return messages


StandaloneItem = Message | FunctionCallOutput | Compaction
"""Items whose chat message depends on the item (and the engine's settings) alone: never an assistant
message, which takes reasoning and the function calls that follow it."""
CachedItem = StandaloneItem | FunctionCall


def build_messages(
    history: Iterable[InputItem], instructions: str | None, settings: OpenAIChatSettings
) -> list[ChatMessage]:
    """The chat `messages` for a turn: `instructions` (sent per request, never inherited) as a leading
    system message, then every item. An assistant text message and the function calls that follow it
    become one assistant message, as the model produced them in one turn."""
    messages: list[ChatMessage] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    open_assistant: ChatMessage | None = None  # the assistant message later calls are merged into
    reasoning: list[str] = []  # reasoning text waiting for the assistant message it precedes
    for item in history:
        if isinstance(item, FunctionCall):
            if open_assistant is None:
                open_assistant = {"role": "assistant", "content": ""}
                messages.append(open_assistant)
            _attach_reasoning(open_assistant, reasoning, settings)
            open_assistant.setdefault("tool_calls", []).append(_tool_call(item))
            continue
        if isinstance(item, Reasoning):
            if settings.reasoning != "drop":
                text = reasoning_text(item)
                if text:
                    reasoning.append(text)
            continue  # does not break a merge: reasoning sits between a message and its calls
        open_assistant = None
        if isinstance(item, Message) and item.role == "assistant":
            message = _message(item, settings)
            _attach_reasoning(message, reasoning, settings)
            open_assistant = message
            messages.append(message)
        elif isinstance(item, Message | FunctionCallOutput | Compaction):
            messages.append(_standalone(item, settings))
        elif isinstance(item, ItemReference):
            raise EngineError(
                f"item_reference {item.id!r} reached the engine unresolved", code="server_error"
            )
    return messages


def _tool_call(item: FunctionCall) -> dict[str, Any]:
    return {
        "id": item.call_id,
        "type": "function",
        "function": {"name": item.name, "arguments": item.arguments},
    }


def _standalone(item: StandaloneItem, settings: OpenAIChatSettings) -> ChatMessage:
    if isinstance(item, Message):
        return _message(item, settings)
    if isinstance(item, FunctionCallOutput):
        return {"role": "tool", "tool_call_id": item.call_id, "content": _tool_output(item)}
    summary = decode_summary(item.encrypted_content)
    body = summary if summary is not None else UNREADABLE_COMPACTION
    return {"role": "system", "content": COMPACTION_PREFIX + body}


class MessageCache:
    """The encoded chat message of each standalone item (and the encoded `tool_calls` entry of each function
    call), by item identity, least recently used first.

    Protocol items are immutable once they are in a Context, and a lane's next turn (and every fork of it)
    passes the very same objects again, so identity is the key: no hashing or comparing of content. Each
    entry holds its item, so the id cannot be reused by another object while the entry lives, and a lookup
    still checks identity. Bounded by `max_bytes` of encoded JSON (the items held are about as large
    again, and are usually held by the lanes' contexts anyway); the least recently used entries go first.
    Settings are fixed per engine, and instructions and tools are never part of an entry."""

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
        self._entries[key] = (item, raw, isinstance(item, FunctionCall))
        self.size += size
        while self.size > self.max_bytes:
            _, (_, evicted, _) = self._entries.popitem(last=False)
            self.size -= len(evicted)

    def clear(self) -> None:
        self._entries.clear()
        self.size = 0


def _attach_reasoning(message: ChatMessage, reasoning: list[str], settings: OpenAIChatSettings) -> None:
    if not reasoning:
        return
    field = settings.reasoning
    earlier = message.get(field)
    message[field] = "\n".join([earlier, *reasoning] if earlier else reasoning)
    reasoning.clear()


def reasoning_text(item: Reasoning) -> str:
    """The readable text of a reasoning item: its content when present, else its summary."""
    entries = item.content if item.content else item.summary
    texts: list[str] = []
    for entry in entries:
        text = entry.get("text") if isinstance(entry, Mapping) else getattr(entry, "text", None)
        if isinstance(text, str) and text:
            texts.append(text)
    return "\n".join(texts)


def _message(item: Message, settings: OpenAIChatSettings) -> ChatMessage:
    role = item.role
    content = item.content
    if role == "assistant":
        text = content if isinstance(content, str) else "".join(_part_text(part) for part in content)
        return {"role": "assistant", "content": text}
    if role == "developer":
        role = settings.developer_role
    if isinstance(content, str):
        return {"role": role, "content": content}
    if role != "user" or all(_is_text(part) for part in content):
        # system and developer messages take text only; images there become the same marker text_of uses
        return {"role": role, "content": "\n".join(_part_text(part) for part in content)}
    return {"role": role, "content": [_chat_part(part) for part in content]}


def _tool_output(item: FunctionCallOutput) -> str | list[dict[str, Any]]:
    output = item.output
    if isinstance(output, str):
        return output
    if all(_is_text(part) for part in output):
        return "\n".join(_part_text(part) for part in output)
    return [_chat_part(part) for part in output]


def _is_text(part: ContentPart) -> bool:
    return isinstance(part, InputText | OutputText | Refusal)


def _part_text(part: ContentPart) -> str:
    if isinstance(part, InputText | OutputText):
        return part.text
    if isinstance(part, Refusal):
        return part.refusal
    return "<image>" if isinstance(part, InputImage) else "<file>"


def _chat_part(part: ContentPart) -> dict[str, Any]:
    if isinstance(part, InputText | OutputText):
        return {"type": "text", "text": part.text}
    if isinstance(part, Refusal):
        return {"type": "text", "text": part.refusal}
    if isinstance(part, InputImage):
        if not part.image_url:
            raise EngineError(
                "an input_image given only by file_id cannot be sent to a chat-completions upstream; "
                "send image_url (an https or data: URL)",
                code="unsupported_content",
            )
        image: dict[str, Any] = {"url": part.image_url}
        if part.detail != "auto":
            image["detail"] = part.detail
        return {"type": "image_url", "image_url": image}
    file: dict[str, Any] = {}
    if part.file_data is not None:
        file["file_data"] = part.file_data
    if part.file_id is not None:
        file["file_id"] = part.file_id
    if part.filename is not None:
        file["filename"] = part.filename
    if not file:
        raise EngineError(
            "an input_file given only by file_url cannot be sent to a chat-completions upstream",
            code="unsupported_content",
        )
    assert isinstance(part, InputFile)
    return {"type": "file", "file": file}


# -- tools ---------------------------------------------------------------------------------------------


def build_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Flat Responses function tools as nested chat tools."""
    chat_tools: list[dict[str, Any]] = []
    for tool in tools:
        function: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            function["description"] = tool.description
        function["parameters"] = tool.parameters if tool.parameters is not None else dict(EMPTY_PARAMETERS)
        if tool.strict is not None:
            function["strict"] = tool.strict
        chat_tools.append({"type": "function", "function": function})
    return chat_tools


def tool_fields(
    tools: Sequence[ToolSpec], choice: ToolChoice, parallel: bool, settings: OpenAIChatSettings
) -> dict[str, Any]:
    """`tools`, `tool_choice` and `parallel_tool_calls`, or nothing without tools (several servers reject
    a tool_choice without tools). "auto" is every server's default with tools, so it is not sent."""
    if not tools:
        return {}
    fields: dict[str, Any] = {}
    if isinstance(choice, NamedToolChoice):
        named = [tool for tool in tools if tool.name == choice.name]
        if not named:
            raise EngineError(
                f"tool_choice names {choice.name!r}, which is not among the tools", code="invalid_request"
            )
        if settings.named_tool_choice == "required":
            fields["tools"] = build_tools(named)
            fields["tool_choice"] = "required"
        else:
            fields["tools"] = build_tools(tools)
            fields["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    else:
        fields["tools"] = build_tools(tools)
        if choice != "auto":
            fields["tool_choice"] = choice
    fields["parallel_tool_calls"] = parallel
    return fields


# -- the whole request ---------------------------------------------------------------------------------


def build_body(
    request: EngineRequest, settings: OpenAIChatSettings, cache: MessageCache | None = None
) -> dict[str, Any]:
    """The chat-completions request body for one turn (always streamed). With `cache`, `messages` holds
    encoded messages (msgspec.Raw) for the wire: encode it, do not read it."""
    messages: list[ChatMessage] | list[ChatMessage | msgspec.Raw] = (
        build_messages(request.history, request.instructions, settings)
        if cache is None
        else build_wire_messages(request.history, request.instructions, settings, cache)
    )
    body: dict[str, Any] = {
        "model": settings.model or request.model,
        "messages": messages,
        "stream": True,
    }
    if settings.include_usage:
        body["stream_options"] = {"include_usage": True}
    body.update(tool_fields(request.tools, request.tool_choice, request.parallel_tool_calls, settings))
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    limit = request.max_output_tokens or settings.default_max_output_tokens
    if limit:
        body[settings.max_tokens_field] = limit
    if request.cache_key:
        token = affinity_token(request.cache_key)
        if "prompt_cache_key" in settings.cache_key_via:
            body["prompt_cache_key"] = token
        if "user" in settings.cache_key_via:
            body["user"] = token
    for name, value in settings.extra_body.items():
        body.setdefault(name, value)
    return body


def build_headers(request: EngineRequest, settings: OpenAIChatSettings) -> dict[str, str]:
    """The per-turn headers (auth and static headers are the connection pool's)."""
    if request.cache_key and "header" in settings.cache_key_via:
        return {settings.cache_key_header: affinity_token(request.cache_key)}
    return {}


def encode_body(body: Mapping[str, Any]) -> bytes:
    return _encode(body)
