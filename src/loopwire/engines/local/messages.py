"""Responses items into the chat messages and tools a Hugging Face chat template reads.

Owns the item → message mapping in the transformers convention (tool-call arguments as objects, text-only
content); must not render templates, tokenize or import torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from ...protocol.compaction import decode_summary
from ...protocol.items import (
    Compaction,
    FunctionCall,
    FunctionCallOutput,
    InputItem,
    ItemReference,
    Message,
    Reasoning,
    text_of,
)
from ..base import EngineError, ToolSpec

ChatMessage = dict[str, Any]
# The same words the sim and openai-chat engines use for a compacted window.
COMPACTION_PREFIX = "Summary of the conversation so far:\n"
UNREADABLE_COMPACTION = "(an earlier part of the conversation was compacted)"


def build_messages(history: Iterable[InputItem], instructions: str | None) -> list[ChatMessage]:
    """Instructions as a leading system message, then the items. An assistant message and the function
    calls that follow it are one assistant message, as the model produced them in one turn; `developer`
    becomes `system` (few templates know it); reasoning items are dropped (templates drop past thinking)."""
    messages: list[ChatMessage] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    open_assistant: ChatMessage | None = None
    for item in history:
        if isinstance(item, FunctionCall):
            if open_assistant is None:
                open_assistant = {"role": "assistant", "content": ""}
                messages.append(open_assistant)
            open_assistant.setdefault("tool_calls", []).append(_tool_call(item))
            continue
        if isinstance(item, Reasoning):
            continue
        open_assistant = None
        if isinstance(item, Message):
            role = "system" if item.role == "developer" else item.role
            message: ChatMessage = {"role": role, "content": text_of(item.content)}
            if role == "assistant":
                open_assistant = message
            messages.append(message)
        elif isinstance(item, FunctionCallOutput):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": text_of(item.output)})
        elif isinstance(item, Compaction):
            summary = decode_summary(item.encrypted_content)
            body = summary if summary is not None else UNREADABLE_COMPACTION
            messages.append({"role": "system", "content": COMPACTION_PREFIX + body})
        elif isinstance(item, ItemReference):
            raise EngineError(f"item_reference {item.id!r} reached the engine unresolved")
    return messages


def _tool_call(item: FunctionCall) -> dict[str, Any]:
    """Templates write `arguments | tojson`, so arguments go in as the object they encode; a string that
    is not a JSON object stays a string."""
    try:
        arguments: Any = json.loads(item.arguments) if item.arguments else {}
    except json.JSONDecodeError:
        arguments = item.arguments
    if not isinstance(arguments, dict):
        arguments = item.arguments
    return {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": arguments}}


def build_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Flat Responses function tools as the nested JSON-schema tools templates expect."""
    built: list[dict[str, Any]] = []
    for tool in tools:
        function: dict[str, Any] = {"name": tool.name}
        if tool.description:
            function["description"] = tool.description
        function["parameters"] = (
            tool.parameters
            if tool.parameters is not None
            else {
                "type": "object",
                "properties": {},
            }
        )
        built.append({"type": "function", "function": function})
    return built
