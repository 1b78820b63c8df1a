"""One turn as an upstream Responses create body: the input items to send, tools, sampling, chaining.

Owns the mapping from an EngineRequest to the upstream's JSON (HTTP body or WebSocket frame); must not do
I/O nor decide whether a turn continues upstream (the engine picks `previous_id` and the items).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from ...protocol.items import (
    Compaction,
    CustomToolCall,
    CustomToolCallOutput,
    FunctionCall,
    FunctionCallOutput,
    InputItem,
    Message,
    sent_json,
)
from ..base import EngineRequest, NamedToolChoice, ToolSpec
from ..common.affinity import affinity_token
from ..common.history_text import compaction_text
from ..common.sampling import sampling_fields
from .settings import ResponsesSettings

_encode = msgspec.json.Encoder().encode


_OWN_IDS = (Message, FunctionCall, FunctionCallOutput, CustomToolCall, CustomToolCallOutput)
_decode_fields = msgspec.json.Decoder(dict[str, Any]).decode


def upstream_item(item: InputItem) -> InputItem | msgspec.Raw | dict[str, Any]:
    """An item as it goes upstream, every field the client sent kept. Ids of messages, calls and outputs
    are this server's, which the upstream never issued (strict servers reject unknown ids), so they are
    dropped; a compaction is this server's own payload and goes as the summary text it holds. Reasoning
    items, references and the items of hosted tools pass as they are."""
    if isinstance(item, _OWN_IDS):
        sent = sent_json(item)
        if sent is not None:
            fields = _decode_fields(sent)
            fields.pop("id", None)
            fields.pop("status", None)
            return fields
        if item.id is None and item.status is None:
            return item
        return msgspec.structs.replace(item, id=None, status=None)
    if isinstance(item, Compaction):
        return Message(role="developer", content=compaction_text(item))
    return sent_json(item) or item


def tool_json(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Flat Responses function tools, with only the fields the client gave."""
    out: list[dict[str, Any]] = []
    for tool in tools:
        spec: dict[str, Any] = {"type": "function", "name": tool.name}
        if tool.description is not None:
            spec["description"] = tool.description
        if tool.parameters is not None:
            spec["parameters"] = tool.parameters
        if tool.strict is not None:
            spec["strict"] = tool.strict
        out.append(spec)
    return out


def build_body(
    request: EngineRequest,
    settings: ResponsesSettings,
    *,
    items: Sequence[InputItem],
    previous_id: str | None,
    store: bool,
    websocket: bool,
) -> dict[str, Any]:
    """The create body. Instructions and tools go every turn: the Responses API does not inherit them
    through `previous_response_id`. Over a WebSocket it is a flat `response.create` event."""
    body: dict[str, Any] = {"type": "response.create"} if websocket else {}
    body["model"] = settings.model or request.model
    body["input"] = [upstream_item(item) for item in items]
    if request.instructions is not None:
        body["instructions"] = request.instructions
    if previous_id is not None:
        body["previous_response_id"] = previous_id
    body["store"] = store
    body["stream"] = True
    if request.sent_tools:  # every tool as the client sent it: the upstream may run hosted ones itself
        body["tools"] = [msgspec.Raw(tool) for tool in request.sent_tools]
        body["tool_choice"] = request.sent_tool_choice or "auto"
        body["parallel_tool_calls"] = request.parallel_tool_calls
    elif request.tools:
        body["tools"] = tool_json(request.tools)
        choice = request.tool_choice
        body["tool_choice"] = (
            {"type": choice.kind, "name": choice.name} if isinstance(choice, NamedToolChoice) else choice
        )
        body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.reasoning is not None:
        body["reasoning"] = request.reasoning
    if request.include:
        body["include"] = list(request.include)
    if request.text_format is not None:
        body["text"] = {"format": request.text_format}
    if request.client_metadata is not None:
        body["client_metadata"] = request.client_metadata
    body.update(sampling_fields(request, "max_output_tokens"))
    if request.metadata:
        body["metadata"] = request.metadata
    if request.cache_key:
        body["prompt_cache_key"] = affinity_token(request.cache_key)
    if websocket and not request.generate:
        body["generate"] = False
    for name, value in settings.extra_body.items():
        body.setdefault(name, value)
    return body


COUNT_FIELDS = frozenset(
    {"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "reasoning", "text"}
)
"""What `/responses/input_tokens` takes of a create body (no streaming, storing or sampling fields)."""


def count_body(request: EngineRequest, settings: ResponsesSettings) -> dict[str, Any]:
    """The upstream `/responses/input_tokens` body for the request's whole context."""
    body = build_body(
        request, settings, items=list(request.history), previous_id=None, store=False, websocket=False
    )
    return {name: value for name, value in body.items() if name in COUNT_FIELDS}


def encode_body(body: dict[str, Any]) -> bytes:
    return _encode(body)
