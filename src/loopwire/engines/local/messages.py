"""Responses items into the chat messages and tools a Hugging Face chat template reads.

Owns the item → message mapping in the transformers convention (tool-call arguments as objects, text-only
content); must not render templates, tokenize or import torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, cast

from ...protocol.items import FunctionCall, FunctionCallOutput, InputItem, Message, text_of
from ..base import ToolSpec
from ..common.chat_messages import ChatForm, ChatMessage, StandaloneItem, chat_messages
from ..common.history_text import compaction_text


def _standalone(item: StandaloneItem) -> ChatMessage:
    if isinstance(item, Message):
        return {"role": "system" if item.role == "developer" else item.role, "content": text_of(item.content)}
    if isinstance(item, FunctionCallOutput):
        return {"role": "tool", "tool_call_id": item.call_id, "content": text_of(item.output)}
    return {"role": "system", "content": compaction_text(item)}


def _assistant(item: Message) -> ChatMessage:
    return {"role": "assistant", "content": text_of(item.content)}


def build_messages(history: Iterable[InputItem], instructions: str | None) -> list[ChatMessage]:
    """Instructions as a leading system message, then the items (grouped as common/chat_messages.py says:
    an assistant message and the function calls after it are one assistant message); `developer` becomes
    `system` (few templates know it); reasoning items are dropped (templates drop past thinking)."""
    return cast(list[ChatMessage], chat_messages(history, instructions, _FORM))


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


_FORM = ChatForm(standalone=_standalone, assistant=_assistant, tool_call=_tool_call, reasoning=None)
"""Items as Hugging Face chat templates read them; reasoning items are dropped."""


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
