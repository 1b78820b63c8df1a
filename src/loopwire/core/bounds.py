"""The bounds on what a request may make the server hold or walk: item and tool counts, compaction payload
sizes, and the nesting of the free-form JSON values it keeps and echoes.

Owns these checks and their 400s (each naming its field); must not resolve, plan or render anything.
Nesting past what the decoder goes at all is refused while decoding (protocol/request.py).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..protocol.compaction import PayloadTooLarge, check_summary
from ..protocol.errors import invalid_request
from ..protocol.items import Compaction, InputItem, Message, OutputText, Reasoning
from ..protocol.request import CompactRequest, CreateRequest, too_deep
from .limits import Limits


def check_bounds(request: CreateRequest, limits: Limits) -> None:
    """Every bound of a create (over either transport, and /input_tokens)."""
    check_input(request.input, limits)
    tools = request.tools or []
    _check_count(tools, limits.max_tools, "tools")
    depth = limits.max_json_depth
    for name in ("reasoning", "text", "tool_choice", "conversation", "context_management"):
        _check_depth(getattr(request, name), depth, name)
    if tools:
        _check_tools(tools, depth)


_RECENT_TOOLS: list[tuple[int, tuple[bytes, ...]]] = []
_RECENT_TOOLS_MAX = 16
_decode_tool = msgspec.json.Decoder(dict[str, Any]).decode


def _check_tools(tools: list[msgspec.Raw], limit: int) -> None:
    """400 when a value inside a tool (its `parameters`, any field, a namespace member's) nests more than
    `limit` levels. A WebSocket client sends the same tools every turn: a list equal to one recently found
    within is not counted again."""
    sent = tuple(bytes(tool) for tool in tools)
    for known_limit, known in _RECENT_TOOLS:
        if known_limit == limit and known == sent:
            return
    for index, tool in enumerate(sent):
        # a tool's values sit one level below it: a tool within limit + 1 has none deeper than limit
        if _json_depth(tool, limit + 1) > limit + 1:
            _check_tool(_decode_tool(tool), limit, f"tools[{index}]")
    if len(_RECENT_TOOLS) >= _RECENT_TOOLS_MAX:
        _RECENT_TOOLS.pop(0)
    _RECENT_TOOLS.append((limit, sent))


def _check_tool(tool: dict[str, Any], limit: int, where: str) -> None:
    for name, value in tool.items():
        if name == "tools" and tool.get("type") == "namespace" and isinstance(value, list):
            for position, member in enumerate(value):
                if isinstance(member, dict):
                    _check_tool(member, limit, f"{where}.tools[{position}]")
                else:
                    _check_depth(member, limit, f"{where}.tools[{position}]")
        else:
            _check_depth(value, limit, f"{where}.{name}")


def check_compact(request: CompactRequest, limits: Limits) -> None:
    check_input(request.input, limits)


def check_input(items: str | list[InputItem] | None, limits: Limits) -> None:
    """The item count, each compaction payload's size before and after inflating (never inflating past
    the bound), and the nesting of the free-form values inside items."""
    if not isinstance(items, list):
        return
    _check_count(items, limits.max_input_items, "input")
    depth = limits.max_json_depth
    for index, item in enumerate(items):
        if isinstance(item, Compaction):
            _check_compaction(item, index, limits)
        elif isinstance(item, Reasoning):
            _check_depth(item.summary, depth, f"input[{index}].summary")
            _check_depth(item.content, depth, f"input[{index}].content")
        elif isinstance(item, Message) and not isinstance(item.content, str):
            for number, part in enumerate(item.content):
                if isinstance(part, OutputText) and (part.annotations or part.logprobs):
                    where = f"input[{index}].content[{number}]"
                    _check_depth(part.annotations, depth, f"{where}.annotations")
                    _check_depth(part.logprobs, depth, f"{where}.logprobs")


def _check_count(values: list[Any], limit: int, param: str) -> None:
    if len(values) > limit:
        raise invalid_request(
            f"'{param}' has {len(values)} entries; at most {limit} are accepted.",
            param=param,
            code="array_above_max_length",
        )


def _check_compaction(item: Compaction, index: int, limits: Limits) -> None:
    try:
        check_summary(
            item.encrypted_content,
            max_payload_chars=limits.max_compaction_payload_chars,
            max_summary_bytes=limits.max_compaction_summary_bytes,
        )
    except PayloadTooLarge as error:
        raise invalid_request(
            f"This compaction item's encrypted_content {error}; it cannot be read back.",
            param=f"input[{index}].encrypted_content",
            code="compaction_too_large" if error.inflated else "string_above_max_length",
        ) from None


_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_ONE_KIND = bytes.maketrans(b"{}", b"[]")


def _json_depth(encoded: bytes, cap: int) -> int:
    """How deep the containers of this JSON nest (`{}` is 1), counted up to `cap + 1`, at C speed (a Python
    walk costs ~0.5 us a node): drop the strings (after their escaped quotes), keep the brackets as one
    kind, then each `replace` pass deletes the innermost pairs, one level."""
    unescaped = encoded.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unescaped.split(b'"')[::2]).translate(_ONE_KIND, _NOT_BRACKETS)
    depth = 0
    while brackets and depth <= cap:
        brackets = brackets.replace(b"[]", b"")
        depth += 1
    return depth


def _check_depth(value: Any, limit: int, param: str) -> None:
    """400 when `value` nests containers more than `limit` levels (a bare `{}` or `[]` is one level)."""
    if type(value) in (dict, list) and _json_depth(msgspec.json.encode(value), limit) > limit:
        raise too_deep(param, limit)
