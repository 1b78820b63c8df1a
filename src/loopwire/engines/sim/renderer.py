"""The simulated model's chat template: instructions, tools and each item rendered as ChatML-like text.

Owns how an item looks to the model and what it costs in tokens; must not hash, cache, sleep or generate.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
    item_type,
    text_of,
)
from ..base import ToolSpec
from ..common.history_text import COMPACTION_PREFIX, compaction_summary, reasoning_text
from .tokenizer import count_tokens

IM_START = "<|im_start|>"
IM_END = "<|im_end|>\n"
GENERATION_PROMPT = IM_START + "assistant\n"
"""What the prompt ends with when the model is asked to answer; the start of every assistant item."""

GENERATION_PROMPT_TOKENS = count_tokens(GENERATION_PROMPT)

_TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n"
    "Function signatures are given within <tools></tools>:\n<tools>\n"
)
_TOOLS_EPILOGUE = (
    "</tools>\n\nFor each function call, answer with a JSON object within <tool_call></tool_call>:\n"
    '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


@dataclass(frozen=True, slots=True)
class Rendered:
    """Template text and its token count (the sum over its pieces; see `measure`)."""

    text: str
    tokens: int


def measure(pieces: Sequence[str]) -> Rendered:
    """Pieces are tokenized separately, as a real template tokenizes special tokens apart from content, so
    the count of a rendering is the sum of its pieces' counts and never depends on what comes before it."""
    return Rendered("".join(pieces), sum(map(count_tokens, pieces)))


def header_pieces(instructions: str | None, tools: Sequence[ToolSpec]) -> tuple[str, ...]:
    """The system block; empty when there are neither instructions nor tools."""
    if not instructions and not tools:
        return ()
    pieces: list[str] = [IM_START + "system\n"]
    if instructions:
        pieces.append(instructions)
    if tools:
        pieces.append(("\n\n" if instructions else "") + _TOOLS_PREAMBLE)
        pieces.extend(_tool_line(tool) for tool in tools)
        pieces.append(_TOOLS_EPILOGUE)
    pieces.append(IM_END)
    return tuple(pieces)


def _tool_line(tool: ToolSpec) -> str:
    if tool.kind == "custom":
        custom: dict[str, Any] = {"type": "custom", "name": tool.name}
        if tool.namespace:
            custom["namespace"] = tool.namespace
        if tool.description:
            custom["description"] = tool.description
        if tool.format:
            custom["format"] = tool.format
        return json.dumps(custom, ensure_ascii=False) + "\n"
    function: dict[str, Any] = {"name": tool.name}
    if tool.namespace:
        function["namespace"] = tool.namespace
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = tool.parameters if tool.parameters is not None else {}
    return json.dumps({"type": "function", "function": function}, ensure_ascii=False) + "\n"


def message_pieces(role: str, text: str) -> tuple[str, ...]:
    return (IM_START + role + "\n", text, IM_END)


def function_call_pieces(name: str, arguments: str) -> tuple[str, str, str, str, str]:
    """(generation prompt, head up to the arguments, arguments verbatim, tail, end of turn)."""
    head = '<tool_call>\n{"name": ' + json.dumps(name, ensure_ascii=False) + ', "arguments": '
    return (GENERATION_PROMPT, head, arguments, "}\n</tool_call>", IM_END)


def item_pieces(item: InputItem) -> tuple[str, ...]:
    """One item as template pieces. Ids and statuses are invisible to the model, so an output item renders
    the same whether it comes from this turn's generation or back as history with ids set."""
    if isinstance(item, Message):
        return message_pieces(item.role, text_of(item.content))
    if isinstance(item, FunctionCall):
        return function_call_pieces(item.name, item.arguments)
    if isinstance(item, FunctionCallOutput):
        return (IM_START + "tool\n", "<tool_response>\n", text_of(item.output), "\n</tool_response>", IM_END)
    if isinstance(item, Reasoning):
        return (GENERATION_PROMPT, "<think>\n", reasoning_text(item), "\n</think>", IM_END)
    if isinstance(item, ItemReference):
        return ("<|item_ref|>", item.id, "\n")
    if isinstance(item, Compaction):
        return (IM_START + "system\n", COMPACTION_PREFIX, compaction_summary(item), IM_END)
    return _other_pieces(item)


def _other_pieces(item: InputItem) -> tuple[str, ...]:
    """Custom tool calls and outputs render like function calls; an item of a hosted tool (run by some
    provider, not by this model) renders as its type and call id, so it costs a few tokens."""
    if isinstance(item, CustomToolCall):
        return function_call_pieces(item.name, item.input)
    if isinstance(item, CustomToolCallOutput):
        return (IM_START + "tool\n", "<tool_response>\n", text_of(item.output), "\n</tool_response>", IM_END)
    return (f"<|{item_type(item)}|>", getattr(item, "call_id", None) or getattr(item, "id", None) or "", "\n")


class ChatRenderer:
    """Renders headers and items, counting how many items it rendered (the fast path's cost measure)."""

    __slots__ = ("headers_rendered", "items_rendered")

    def __init__(self) -> None:
        self.items_rendered = 0
        self.headers_rendered = 0

    def header(self, instructions: str | None, tools: Sequence[ToolSpec]) -> Rendered:
        self.headers_rendered += 1
        return measure(header_pieces(instructions, tools))

    def item(self, item: InputItem) -> Rendered:
        self.items_rendered += 1
        return measure(item_pieces(item))
