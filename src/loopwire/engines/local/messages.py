"""Responses items into the chat messages and tools a Hugging Face chat template reads.

Owns the item → message mapping in the transformers convention (tool-call arguments as objects, text-only
content); must not render templates, tokenize or import torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, cast

from ...protocol.items import CustomToolCallOutput, FunctionCallOutput, InputItem, Message, text_of
from ..base import ToolSpec
from ..common.chat_messages import ChatForm, ChatMessage, StandaloneItem, ToolCallItem, chat_messages
from ..common.history_text import compaction_text
from ..common.tool_names import ChatToolNames


def _standalone(item: StandaloneItem) -> ChatMessage:
    if isinstance(item, Message):
        return {"role": "system" if item.role == "developer" else item.role, "content": text_of(item.content)}
    if isinstance(item, FunctionCallOutput | CustomToolCallOutput):
        return {"role": "tool", "tool_call_id": item.call_id, "content": text_of(item.output)}
    return {"role": "system", "content": compaction_text(item)}


def _assistant(item: Message) -> ChatMessage:
    return {"role": "assistant", "content": text_of(item.content)}


def build_messages(
    history: Iterable[InputItem], instructions: str | None, names: ChatToolNames | None = None
) -> list[ChatMessage]:
    """Instructions as a leading system message, then the items (grouped as common/chat_messages.py says:
    an assistant message and the function calls after it are one assistant message); `developer` becomes
    `system` (few templates know it); reasoning items are dropped (templates drop past thinking); calls
    are named as `names` offers the tools (common/tool_names.py)."""
    form = ChatForm(
        standalone=_standalone,
        assistant=_assistant,
        tool_call=partial(_tool_call, names or ChatToolNames(())),
        reasoning=None,
    )
    return cast(list[ChatMessage], chat_messages(history, instructions, form))


def _tool_call(names: ChatToolNames, item: ToolCallItem) -> dict[str, Any]:
    """Templates write `arguments | tojson`, so arguments go in as the object they encode; a string that
    is not a JSON object stays a string."""
    name, encoded = names.call(item)
    try:
        arguments: Any = json.loads(encoded) if encoded else {}
    except json.JSONDecodeError:
        arguments = encoded
    if not isinstance(arguments, dict):
        arguments = encoded
    return {"id": item.call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def build_tools(tools: Sequence[ToolSpec], names: ChatToolNames | None = None) -> list[dict[str, Any]]:
    """Responses function and custom tools, namespaced or not, as the nested JSON-schema tools templates
    expect (named and shaped as common/tool_names.py says)."""
    names = names or ChatToolNames(tools)
    return [{"type": "function", "function": names.function(tool)} for tool in tools]
