"""Turning a validated create request and its resolved parent into a plan the engine can run.

Owns field validation, item ids, item references and call-id checks; resolves nothing by I/O itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..engines.base import EngineRequest, NamedToolChoice, ToolChoice, ToolSpec
from ..protocol import ids
from ..protocol.context import EMPTY_CONTEXT, Context
from ..protocol.errors import invalid_request, missing_parameter
from ..protocol.items import (
    Compaction,
    FunctionCall,
    FunctionCallOutput,
    InputItem,
    ItemReference,
    Message,
    Reasoning,
)
from ..protocol.request import CreateRequest
from ..protocol.response import DEFAULT_REASONING, DEFAULT_TEXT, Response
from .bounds import check_bounds
from .cache import CachedResponse, conversation_root, missing_call_ids
from .limits import Limits

_ID_PREFIX = {Message: "msg", FunctionCall: "fc", FunctionCallOutput: "fco", Compaction: "cmp"}


@dataclass(slots=True)
class TurnPlan:
    """Everything a turn needs once its parent is resolved and its input checked."""

    response: Response
    lane: str
    owner: str
    parent: CachedResponse | None
    new_items: list[InputItem]
    context: Context
    engine_request: EngineRequest
    store: bool
    generate: bool
    root: str
    """The conversation's root response id (see session.cache.conversation_root)."""


def validate_fields(request: CreateRequest, limits: Limits, *, websocket: bool) -> None:
    if not request.model:
        raise missing_parameter("model")
    if request.background:
        where = "in WebSocket mode" if websocket else "by this server"
        raise invalid_request(
            f"background responses are not supported {where}.",
            param="background",
            code="unsupported_parameter",
        )
    if request.conversation is not None:
        raise invalid_request(
            "The 'conversation' parameter is not supported by this server; chain with previous_response_id.",
            param="conversation",
            code="unsupported_parameter",
        )
    if request.temperature is not None and not 0.0 <= request.temperature <= 2.0:
        raise invalid_request("'temperature' must be between 0 and 2.", param="temperature")
    if request.top_p is not None and not 0.0 <= request.top_p <= 1.0:
        raise invalid_request("'top_p' must be between 0 and 1.", param="top_p")
    if request.max_output_tokens is not None and request.max_output_tokens < 1:
        raise invalid_request("'max_output_tokens' must be at least 1.", param="max_output_tokens")
    if request.truncation not in (None, "auto", "disabled"):
        raise invalid_request("'truncation' must be 'auto' or 'disabled'.", param="truncation")
    _validate_metadata(request.metadata, limits)
    check_bounds(request, limits)


def _validate_metadata(metadata: dict[str, str] | None, limits: Limits) -> None:
    if metadata is None:
        return
    if len(metadata) > limits.max_metadata_pairs:
        raise invalid_request(
            f"'metadata' may hold at most {limits.max_metadata_pairs} pairs.", param="metadata"
        )
    for key, value in metadata.items():
        if len(key) > limits.max_metadata_key_length:
            raise invalid_request(
                f"metadata keys may be at most {limits.max_metadata_key_length} characters.", param="metadata"
            )
        if len(value) > limits.max_metadata_value_length:
            raise invalid_request(
                f"metadata values may be at most {limits.max_metadata_value_length} characters.",
                param=f"metadata.{key}",
            )


def tool_choice_of(request: CreateRequest, tools: tuple[ToolSpec, ...]) -> ToolChoice:
    choice = request.tool_choice
    if choice is None or choice == "auto":
        return "auto"
    if choice in ("none", "required"):
        return "none" if choice == "none" else "required"
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if not isinstance(name, str) or name not in {tool.name for tool in tools}:
            raise invalid_request(
                f"tool_choice names function {name!r}, which is not in 'tools'.", param="tool_choice"
            )
        return NamedToolChoice(name)
    raise invalid_request(
        "'tool_choice' must be 'auto', 'none', 'required' or {\"type\": \"function\", \"name\": ...}.",
        param="tool_choice",
    )


def _input_items(request: CreateRequest) -> list[InputItem]:
    if request.input is None:
        return []
    if isinstance(request.input, str):
        return [Message(role="user", content=request.input)]
    return request.input


def _find_item(context: Context, item_id: str) -> InputItem | None:
    for segment in context.reversed_segments():
        for item in segment:
            if not isinstance(item, ItemReference) and item.id == item_id:
                return item
    return None


_SCANNED_REFERENCES = 8
"""References resolved by scanning the context (newest segment first: cheap for recent items); past these,
one index of the context resolves the rest, so n references cost O(history + n), not O(history x n)."""


def _index_by_id(context: Context) -> dict[str, InputItem]:
    index: dict[str, InputItem] = {}
    # The item _find_item would return: the newest segment wins, and the first such item within a segment.
    for segment in context.segments():
        for item in reversed(segment):
            if not isinstance(item, ItemReference) and item.id is not None:
                index[item.id] = item
    return index


def _prepare_items(items: list[InputItem], base: Context) -> list[InputItem]:
    """Resolve item references, give every item an id, and check that each function_call_output
    answers a call issued earlier in the context or in this input."""
    prepared: list[InputItem] = []
    issued: set[str] = set()
    answered: dict[str, int] = {}
    scanned = 0
    by_id: dict[str, InputItem] | None = None
    for index, item in enumerate(items):
        if isinstance(item, ItemReference):
            scanned += 1
            if scanned > _SCANNED_REFERENCES and by_id is None:
                by_id = _index_by_id(base)
            found = by_id.get(item.id) if by_id is not None else _find_item(base, item.id)
            if found is None:
                raise invalid_request(
                    f"Item with id '{item.id}' not found.", param=f"input[{index}].id", code="item_not_found"
                )
            prepared.append(found)
            continue
        if isinstance(item, Reasoning):
            prepared.append(item)
            continue
        if item.id is None:
            item.id = ids.new_id(_ID_PREFIX[type(item)])
        if isinstance(item, FunctionCall):
            issued.add(item.call_id)
        elif isinstance(item, FunctionCallOutput) and item.call_id not in issued:
            answered.setdefault(item.call_id, index)
        prepared.append(item)
    unknown = missing_call_ids(base, answered)
    if unknown:
        call_id = min(unknown, key=answered.__getitem__)
        raise invalid_request(
            f"No tool call found for function call output with call_id {call_id}.",
            param=f"input[{answered[call_id]}].call_id",
            code="invalid_function_call_output",
        )
    return prepared


def _tools_of(request: CreateRequest) -> tuple[ToolSpec, ...]:
    if not request.tools:
        return ()
    return tuple(ToolSpec(t.name, t.description, t.parameters, t.strict) for t in request.tools)


def plan_turn(
    request: CreateRequest,
    *,
    parent: CachedResponse | None,
    lane: str,
    owner: str,
    response_id: str,
    now: int,
    generate: bool = True,
) -> TurnPlan:
    """Build the turn. Raises ProtocolError for input that cannot continue `parent`."""
    base = parent.context if parent is not None else EMPTY_CONTEXT
    new_items = _prepare_items(_input_items(request), base)
    context = base.extend(new_items)
    tools = _tools_of(request)
    choice = tool_choice_of(request, tools)
    store = True if request.store is None else request.store
    prefix = parent.render if parent is not None else None
    root = conversation_root(parent, response_id, store)
    engine_request = EngineRequest(
        model=request.model or "",
        history=context,
        instructions=request.instructions,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=True if request.parallel_tool_calls is None else request.parallel_tool_calls,
        temperature=request.temperature,
        top_p=request.top_p,
        max_output_tokens=request.max_output_tokens,
        generate=generate,
        prefix=prefix,
        prefix_items=base.length if prefix is not None else 0,
        # Every node derives the same key for a conversation, so they all pick the same engine replica.
        cache_key=request.prompt_cache_key or f"{owner}/{root}",
        store=store,
        metadata=request.metadata or {},
    )
    response = Response(
        id=response_id,
        created_at=now,
        status="in_progress",
        instructions=request.instructions,
        metadata=request.metadata or {},
        model=request.model or "",
        parallel_tool_calls=engine_request.parallel_tool_calls,
        temperature=1.0 if request.temperature is None else request.temperature,
        tool_choice=_echo_choice(request.tool_choice),
        tools=list(request.tools or ()),
        top_p=1.0 if request.top_p is None else request.top_p,
        previous_response_id=request.previous_response_id,
        store=store,
        text=request.text or dict(DEFAULT_TEXT),
        truncation=request.truncation or "disabled",
        reasoning=request.reasoning or dict(DEFAULT_REASONING),
        max_output_tokens=request.max_output_tokens,
        max_tool_calls=request.max_tool_calls,
        top_logprobs=request.top_logprobs or 0,
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        service_tier=request.service_tier or "default",
        safety_identifier=request.safety_identifier,
        prompt_cache_key=request.prompt_cache_key,
        user=request.user,
    )
    return TurnPlan(response, lane, owner, parent, new_items, context, engine_request, store, generate, root)


def _echo_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any]:
    return "auto" if choice is None else choice
