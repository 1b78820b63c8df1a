"""The functions a chat model is offered for a turn's tools, and its calls of them mapped back.

Owns the mapping both chat-shaped engines share: a namespaced tool is offered as one flat function
`namespace__name` (with a suffix when that name is taken), a custom tool as a function with one string
argument `input` (its grammar, when it has one, in the description); a call of such a function comes back
as a function call carrying its `namespace`, or as a custom tool call whose input is that string. Must not
decide how an engine writes messages or how it parses the model's output.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from ...protocol.items import CustomToolCall, FunctionCall
from ..base import EngineDelta, ToolArgumentsDelta, ToolCallStart, ToolKind, ToolSpec

INPUT_ARGUMENT = "input"
"""The one argument of the function a custom tool is offered as."""
NAMESPACE_SEPARATOR = "__"

EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
"""A function tool without parameters: the chat API reads an omitted schema the same way, but some
servers' tool parsers expect one."""


def flat_name(name: str, namespace: str | None) -> str:
    return name if namespace is None else f"{namespace}{NAMESPACE_SEPARATOR}{name}"


class ChatToolNames:
    """The flat function name of each tool of a turn, unique among them, and the tool behind each name."""

    __slots__ = ("_flat", "_specs")

    def __init__(self, tools: Sequence[ToolSpec]) -> None:
        taken = {tool.name for tool in tools if tool.namespace is None}
        self._flat: dict[tuple[str | None, str, ToolKind], str] = {}
        self._specs: dict[str, ToolSpec] = {}
        for tool in tools:
            flat = flat_name(tool.name, tool.namespace)
            if tool.namespace is not None:
                base, suffix = flat, 2
                while flat in taken:
                    flat, suffix = f"{base}_{suffix}", suffix + 1
                taken.add(flat)
            self._flat.setdefault((tool.namespace, tool.name, tool.kind), flat)
            self._specs.setdefault(flat, tool)

    def flat(self, name: str, namespace: str | None, kind: ToolKind = "function") -> str:
        """The name the model knows the tool by (the plain rule for a tool no longer offered)."""
        return self._flat.get((namespace, name, kind)) or flat_name(name, namespace)

    def spec(self, flat: str) -> ToolSpec | None:
        return self._specs.get(flat)

    def function(self, tool: ToolSpec) -> dict[str, Any]:
        """The chat `function` object for a tool: name, description (when it has one), parameters."""
        function: dict[str, Any] = {"name": self.flat(tool.name, tool.namespace, tool.kind)}
        if tool.kind == "custom":
            description = _custom_description(tool)
            if description:
                function["description"] = description
            function["parameters"] = {
                "type": "object",
                "properties": {INPUT_ARGUMENT: {"type": "string"}},
                "required": [INPUT_ARGUMENT],
                "additionalProperties": False,
            }
            return function
        if tool.description:
            function["description"] = tool.description
        function["parameters"] = tool.parameters if tool.parameters is not None else dict(EMPTY_PARAMETERS)
        return function

    def call(self, item: FunctionCall | CustomToolCall) -> tuple[str, str]:
        """A call in history as the model made it: (flat function name, JSON arguments)."""
        if isinstance(item, CustomToolCall):
            arguments = json.dumps({INPUT_ARGUMENT: item.input}, ensure_ascii=False)
            return self.flat(item.name, item.namespace, "custom"), arguments
        return self.flat(item.name, item.namespace), item.arguments


def _custom_description(tool: ToolSpec) -> str:
    text = tool.description or ""
    fmt = tool.format or {}
    if fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
        syntax = fmt.get("syntax", "lark")
        hint = f"The `{INPUT_ARGUMENT}` argument is free text that must match this {syntax} grammar:\n"
        text = (text + "\n\n" if text else "") + hint + fmt["definition"]
    return text


class CallRestorer:
    """Maps a stream of deltas from the flat functions back to the tools the client offered: a call of a
    namespaced tool starts with its own name and namespace; a custom tool's `{"input": ...}` arguments are
    held until the call ends and come out as its input text. Everything else passes through in order."""

    __slots__ = ("_names", "_pending")

    def __init__(self, names: ChatToolNames) -> None:
        self._names = names
        self._pending: list[str] | None = None  # arguments of an open custom tool call

    def restore(self, deltas: Iterable[EngineDelta]) -> list[EngineDelta]:
        out: list[EngineDelta] = []
        for delta in deltas:
            if isinstance(delta, ToolArgumentsDelta):
                if self._pending is not None:
                    self._pending.append(delta.delta)
                else:
                    out.append(delta)
                continue
            out.extend(self.flush())
            if isinstance(delta, ToolCallStart):
                tool = self._names.spec(delta.name)
                if tool is not None:
                    delta = ToolCallStart(delta.call_id, tool.name, tool.kind, tool.namespace)
                    if tool.kind == "custom":
                        self._pending = []
            out.append(delta)
        return out

    def flush(self) -> list[EngineDelta]:
        """The input of the open custom tool call, if any (call before the stream's Finished)."""
        if self._pending is None:
            return []
        text = "".join(self._pending)
        self._pending = None
        return [ToolArgumentsDelta(_custom_input(text))]


def _custom_input(arguments: str) -> str:
    """`{"input": "..."}` as its string; arguments of any other shape are the input as they are."""
    try:
        decoded = json.loads(arguments)
    except json.JSONDecodeError:
        return arguments
    if isinstance(decoded, dict) and isinstance(decoded.get(INPUT_ARGUMENT), str):
        return str(decoded[INPUT_ARGUMENT])
    return arguments
