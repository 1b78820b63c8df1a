"""Tools as clients send them: each kept byte for byte for the echo, with a typed view of what it is.

Owns the tool vocabulary of the Responses API (function, custom, namespace, the hosted tools), which
tools are malformed (a known type missing what the SDK's types require: a 400 naming the field) and which
are merely new to us (an unknown type: accepted and echoed). Knows nothing of engines or what they can run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import msgspec

from .errors import ProtocolError, invalid_request, validation_error


class FunctionTool(msgspec.Struct, tag_field="type", tag="function"):
    name: str
    parameters: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class CustomTool(msgspec.Struct, tag_field="type", tag="custom"):
    """Freeform text input; `format` is `{"type": "text"}` or a grammar (`lark` / `regex` definition)."""

    name: str
    description: str | None = None
    format: dict[str, Any] | None = None


class _NamespaceBody(msgspec.Struct, tag_field="type", tag="namespace"):
    name: str
    tools: list[msgspec.Raw]
    description: str | None = None


@dataclass(frozen=True, slots=True)
class NamespaceTool:
    """A named group of function and custom tools; a call made inside it carries `namespace`. Members of
    a type new to us are echoed with the namespace and left out of `tools`."""

    name: str
    description: str | None
    tools: tuple[FunctionTool | CustomTool, ...]


class _Hosted(msgspec.Struct, tag_field="type"):
    """Base of the tools a provider runs itself; fields beyond what the SDK requires are kept in the echo."""


def _hosted(tag: str, fields: list[tuple[str, Any]]) -> type[_Hosted]:
    cls = msgspec.defstruct("Hosted_" + tag, fields, bases=(_Hosted,), tag_field="type", tag=tag)
    assert issubclass(cls, _Hosted)
    return cls


_CodeInterpreterContainer = str | dict[str, Any]

HOSTED_TOOLS: dict[str, type[_Hosted]] = {
    tag: _hosted(tag, fields)
    for tag, fields in {
        "web_search": list[tuple[str, Any]](),
        "web_search_2025_08_26": [],
        "web_search_preview": [],
        "web_search_preview_2025_03_11": [],
        "file_search": [("vector_store_ids", list[str])],
        "code_interpreter": [("container", _CodeInterpreterContainer)],
        "image_generation": [],
        "mcp": [("server_label", str)],
        "computer": [],
        "computer_use_preview": [("display_height", int), ("display_width", int), ("environment", str)],
        "local_shell": [],
        "shell": [],
        "apply_patch": [],
        "tool_search": [],
        "programmatic_tool_calling": [],
    }.items()
}
"""Every hosted tool type the SDK's `Tool` union defines, with the fields its types require."""

KnownTool = FunctionTool | CustomTool | NamespaceTool | _Hosted


@dataclass(frozen=True, slots=True)
class UnknownTool:
    """A tool type this server has not heard of: echoed, never offered to a model, never refused."""

    type: str


Tool = KnownTool | UnknownTool

_KNOWN_UNION: Any = FunctionTool | CustomTool | _NamespaceBody
for _cls in HOSTED_TOOLS.values():
    _KNOWN_UNION = _KNOWN_UNION | _cls
_KNOWN_TYPES = frozenset({"function", "custom", "namespace", *HOSTED_TOOLS})
_MEMBER_TYPES = frozenset({"function", "custom"})
_known_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_KNOWN_UNION)
_member_decoder: msgspec.json.Decoder[FunctionTool | CustomTool] = msgspec.json.Decoder(
    FunctionTool | CustomTool
)
_type_peek = msgspec.json.Decoder(dict[str, Any])


class _FunctionPresence(msgspec.Struct):
    """Which of the fields the open spec wants on every echoed function tool were sent at all."""

    description: Any = msgspec.UNSET
    strict: Any = msgspec.UNSET


_presence_decoder = msgspec.json.Decoder(_FunctionPresence)
_echo_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True, eq=False)
class ToolSet:
    """The request's tools: `echo` for the Response (as sent), `tools` the typed view, index for index.
    Shared between requests that sent the same tools (so it hashes by identity): never mutate it."""

    echo: list[msgspec.Raw]
    tools: tuple[Tool, ...]
    sent: tuple[bytes, ...] = ()
    """Each tool's JSON exactly as the client sent it (what an upstream Responses server is given)."""

    def types(self) -> set[str]:
        return {tool.type if isinstance(tool, UnknownTool) else tool_type(tool) for tool in self.tools}


EMPTY_TOOLS = ToolSet([], ())


def tool_type(tool: KnownTool) -> str:
    if isinstance(tool, NamespaceTool):
        return "namespace"
    tag = type(tool).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def parse_tools(raws: list[msgspec.Raw] | None) -> ToolSet:
    """Type each tool. Raises ProtocolError naming the field (`tools[4].name`) for a malformed known
    tool, and `tools[i].type` for a tool without a string type; an unknown type is kept as it is.
    Clients resend the same tools every turn, so the last few tool lists are remembered by their bytes."""
    if not raws:
        return EMPTY_TOOLS
    return _parse_cached(tuple(bytes(raw) for raw in raws))


@functools.lru_cache(maxsize=64)
def _parse_cached(raws: tuple[bytes, ...]) -> ToolSet:
    echo: list[msgspec.Raw] = []
    typed: list[Tool] = []
    for index, data in enumerate(raws):
        raw = msgspec.Raw(data)
        tool = _parse_one(raw, index)
        typed.append(tool)
        echo.append(_echo_of(raw, tool))
    return ToolSet(echo, tuple(typed), raws)


def _parse_one(raw: msgspec.Raw, index: int) -> Tool:
    known: KnownTool | _NamespaceBody | UnknownTool = _decode_known(
        _known_decoder, raw, f"tools[{index}]", _KNOWN_TYPES
    )
    if not isinstance(known, _NamespaceBody):
        return known
    members: list[FunctionTool | CustomTool] = []
    for position, member_raw in enumerate(known.tools):
        member = _decode_known(
            _member_decoder, member_raw, f"tools[{index}].tools[{position}]", _MEMBER_TYPES
        )
        if not isinstance(member, UnknownTool):
            members.append(member)
    return NamespaceTool(known.name, known.description, tuple(members))


def _decode_known(
    decoder: msgspec.json.Decoder[Any], raw: msgspec.Raw, where: str, known: frozenset[str]
) -> Any:
    """The typed tool, or UnknownTool for a well-formed object whose string `type` is not in `known`."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as error:
        if "`$.type`" in str(error) or "`type`" in str(error):
            peeked = _peek(raw)
            if peeked is None:
                raise invalid_request(
                    f"Invalid value for '{where}': each tool must be an object.",
                    param=where,
                    code="invalid_type",
                ) from None
            kind = peeked.get("type")
            if not isinstance(kind, str):
                raise invalid_request(
                    f"Missing or invalid '{where}.type': each tool needs a string type.",
                    param=f"{where}.type",
                    code="invalid_type",
                ) from None
            if kind not in known:
                return UnknownTool(kind)
        raise validation_error(error, where) from None
    except msgspec.DecodeError as error:
        raise ProtocolError(400, f"Invalid JSON in '{where}': {error}.", code="invalid_json") from None


def _peek(raw: msgspec.Raw) -> dict[str, Any] | None:
    try:
        return _type_peek.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def _echo_of(raw: msgspec.Raw, tool: Tool) -> msgspec.Raw:
    """The tool as sent; a top-level function tool without `description` or `strict` gets them as null,
    since the open spec requires both on every echoed function tool. Nothing sent is changed."""
    if not isinstance(tool, FunctionTool):
        return raw
    presence = _presence_decoder.decode(raw)
    if presence.description is not msgspec.UNSET and presence.strict is not msgspec.UNSET:
        return raw
    body = _type_peek.decode(raw)
    body.setdefault("description", None)
    body.setdefault("strict", None)
    return msgspec.Raw(_echo_encoder.encode(body))
