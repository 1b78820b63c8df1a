"""Turning a validated create request and its resolved parent into a plan the engine can run.

Owns field validation, item ids, item references and call-id checks; resolves nothing by I/O itself.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from ..engines.base import EngineRequest, NamedToolChoice, ToolChoice, ToolSpec
from ..protocol import ids
from ..protocol.context import EMPTY_CONTEXT, Context
from ..protocol.errors import ProtocolError, invalid_request, missing_parameter
from ..protocol.items import (
    Compaction,
    FunctionCallOutput,
    InputItem,
    ItemReference,
    McpApprovalResponse,
    Message,
    answered_call_id,
    call_id_of,
    item_type,
    set_id,
)
from ..protocol.request import CreateRequest
from ..protocol.response import DEFAULT_REASONING, DEFAULT_TEXT, Response
from ..protocol.tools import HOSTED_TOOLS, CustomTool, FunctionTool, NamespaceTool, ToolSet, parse_tools
from .bounds import check_bounds
from .cache import CachedResponse, conversation_root, missing_call_ids
from .limits import Limits
from .window import WindowRule, compact_threshold_of, fit_window


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
    """The conversation's root response id (see core.cache.conversation_root)."""
    pruned: bool = False
    """The context was truncated or compacted to fit the window: it no longer extends the parent's."""
    compaction: Compaction | None = None
    """The compaction the server made (it leads both `context` and the turn's output)."""


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
    compact_threshold_of(request.context_management)
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


_CHOICE_HELP = (
    "'tool_choice' must be 'auto', 'none', 'required', {\"type\": \"function\" | \"custom\", \"name\": ...}, "
    '{"type": "allowed_tools", ...} or a tool type in \'tools\'.'
)


def tool_choice_of(
    request: CreateRequest, tools: tuple[ToolSpec, ...], sent: ToolSet, *, runs_hosted: bool
) -> tuple[ToolChoice, tuple[ToolSpec, ...]]:
    """The engine's tool choice and the tools it offers (`allowed_tools` narrows them). A choice that
    forces a hosted tool is passed on by an engine that runs hosted tools and refused by the others."""
    choice = request.tool_choice
    if choice is None or choice == "auto":
        return "auto", tools
    if choice in ("none", "required"):
        return ("none" if choice == "none" else "required"), tools
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise invalid_request(_CHOICE_HELP, param="tool_choice")
    kind = choice["type"]
    if kind in ("function", "custom"):
        name = choice.get("name")
        if not isinstance(name, str) or not any(t.name == name and t.kind == kind for t in tools):
            raise invalid_request(
                f"tool_choice names {kind} tool {name!r}, which is not in 'tools'.", param="tool_choice"
            )
        return NamedToolChoice(name, kind), tools
    if kind == "allowed_tools":
        return _allowed_tools(choice, tools)
    if runs_hosted:
        return "auto", tools  # the engine passes the client's own tool_choice on
    if kind in HOSTED_TOOLS:
        what = f"the hosted tool '{kind}'"
    elif kind in sent.types():
        what = f"a tool of type '{kind}', which this server does not know,"
    else:
        raise invalid_request(_CHOICE_HELP, param="tool_choice.type")
    raise invalid_request(
        f"tool_choice forces {what} and this server's engine cannot run it.",
        param="tool_choice.type",
        code="unsupported_parameter",
    )


def _allowed_tools(
    choice: dict[str, Any], tools: tuple[ToolSpec, ...]
) -> tuple[ToolChoice, tuple[ToolSpec, ...]]:
    mode = choice.get("mode", "auto")
    listed = choice.get("tools")
    if mode not in ("auto", "required"):
        raise invalid_request("'tool_choice.mode' must be 'auto' or 'required'.", param="tool_choice.mode")
    if not isinstance(listed, list) or not all(isinstance(entry, dict) for entry in listed):
        raise invalid_request(
            "'tool_choice.tools' must be a list of tool objects.", param="tool_choice.tools"
        )
    names = {
        (entry.get("type"), entry.get("name"))
        for entry in listed
        if entry.get("type") in ("function", "custom")
    }
    allowed = tuple(tool for tool in tools if (tool.kind, tool.name) in names)
    return ("required" if mode == "required" and allowed else "auto"), allowed


def _input_items(request: CreateRequest) -> list[InputItem]:
    if request.input is None:
        return []
    if isinstance(request.input, str):
        return [Message(role="user", content=request.input)]
    return request.input


def _find_item(context: Context, item_id: str) -> InputItem | None:
    for segment in context.reversed_segments():
        for item in segment:
            if not isinstance(item, ItemReference) and getattr(item, "id", None) == item_id:
                return item
    return None


_ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
    "reasoning": "rs",
    "compaction": "cmp",
}
_SCANNED_REFERENCES = 8
"""References resolved by scanning the context (newest segment first: cheap for recent items); past these,
one index of the context resolves the rest, so n references cost O(history + n), not O(history x n)."""


def _index_by_id(context: Context) -> dict[str, InputItem]:
    index: dict[str, InputItem] = {}
    # The item _find_item would return: the newest segment wins, and the first such item within a segment.
    for segment in context.segments():
        for item in reversed(segment):
            item_id = getattr(item, "id", None)
            if not isinstance(item, ItemReference) and item_id is not None:
                index[item_id] = item
    return index


def _prepare_items(items: list[InputItem], base: Context) -> list[InputItem]:
    """Resolve item references, give every item an id, and check that each tool output (function,
    custom, shell, patch, computer, ... and MCP approval responses) answers a call issued earlier in the
    context or in this input."""
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
        if getattr(item, "id", "") is None:
            kind = item_type(item)
            set_id(item, ids.new_id(_ID_PREFIX.get(kind, "item")))
        issues = call_id_of(item)
        if issues is not None:
            issued.add(issues)
        answers = answered_call_id(item)
        if answers is not None and answers not in issued:
            answered.setdefault(answers, index)
        prepared.append(item)
    unknown = missing_call_ids(base, answered)
    if unknown:
        call_id = min(unknown, key=answered.__getitem__)
        index = answered[call_id]
        output = items[index]
        if isinstance(output, FunctionCallOutput):
            message, code = f"No tool call found for function call output with call_id {call_id}.", None
        else:
            message = f"No tool call found for {item_type(output)} with call_id {call_id}."
            code = "invalid_tool_call_output"
        field = "approval_request_id" if isinstance(output, McpApprovalResponse) else "call_id"
        raise invalid_request(
            message, param=f"input[{index}].{field}", code=code or "invalid_function_call_output"
        )
    return prepared


@functools.lru_cache(maxsize=64)
def specs_of(tools: ToolSet) -> tuple[ToolSpec, ...]:
    """What a model can run: function and custom tools, and those inside namespaces, in the order sent.
    Hosted and unknown tools are not among them. Remembered per (shared) ToolSet, so a lane that resends
    its tools hands the engine the very same specs every turn."""
    specs: list[ToolSpec] = []
    for tool in tools.tools:
        if isinstance(tool, FunctionTool | CustomTool):
            specs.append(_spec(tool, None))
        elif isinstance(tool, NamespaceTool):
            specs.extend(_spec(member, tool.name) for member in tool.tools)
    return tuple(specs)


def _spec(tool: FunctionTool | CustomTool, namespace: str | None) -> ToolSpec:
    if isinstance(tool, FunctionTool):
        return ToolSpec(tool.name, tool.description, tool.parameters, tool.strict, namespace=namespace)
    return ToolSpec(tool.name, tool.description, kind="custom", namespace=namespace, format=tool.format)


def plan_turn(
    request: CreateRequest,
    *,
    parent: CachedResponse | None,
    lane: str,
    owner: str,
    response_id: str,
    now: int,
    generate: bool = True,
    runs_hosted_tools: bool = False,
) -> TurnPlan:
    """Build the turn. Raises ProtocolError for input that cannot continue `parent`."""
    sent = parse_tools(request.tools)
    choice, tools = tool_choice_of(request, specs_of(sent), sent, runs_hosted=runs_hosted_tools)
    base = parent.context if parent is not None else EMPTY_CONTEXT
    new_items = _prepare_items(_input_items(request), base)
    context = base.extend(new_items)
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
        cache_key=request.prompt_cache_key or _conversation_key(owner, root),
        store=store,
        metadata=request.metadata or {},
        sent_tools=sent.sent,
        sent_tool_choice=request.tool_choice,
        client_metadata=request.client_metadata,
        reasoning=request.reasoning,
        include=tuple(request.include or ()),
        text_format=_structured_format(request.text),
    )
    response = response_of(request, response_id, now, sent.echo, status="in_progress")
    return TurnPlan(response, lane, owner, parent, new_items, context, engine_request, store, generate, root)


def _conversation_key(owner: str, root: str) -> str:
    return f"{owner}/{root}"


def window_rule(request: CreateRequest, context_window: int | None) -> WindowRule | None:
    """How this turn must fit: the window less the room `max_output_tokens` asks for (at most half of
    it), `truncation`, and the compaction threshold; None when there is nothing to fit."""
    threshold = compact_threshold_of(request.context_management)
    if context_window is None and threshold is None:
        return None
    window = None
    if context_window is not None:
        window = context_window - min(request.max_output_tokens or 0, context_window // 2)
    return WindowRule(window, request.truncation == "auto", threshold)


def fit_plan(plan: TurnPlan, rule: WindowRule, count_tokens: Callable[[EngineRequest], int]) -> int:
    """Fit the plan's context into the window (core/window.py), counting with the engine's
    `count_tokens`; a truncated or compacted context replaces the plan's and renders from scratch.
    Returns the input tokens; raises ProtocolError (context_length_exceeded) when it cannot fit."""
    request = plan.engine_request

    def measure(items: Sequence[InputItem]) -> int:
        history = EMPTY_CONTEXT.extend(items)
        return count_tokens(dataclasses.replace(request, history=history, prefix=None, prefix_items=0))

    fitted = fit_window(plan.context, rule, count_tokens(request), measure)
    if fitted.items is None:
        return fitted.tokens
    plan.context = EMPTY_CONTEXT.extend(fitted.items)
    plan.pruned = True
    plan.compaction = fitted.compaction
    request.history = plan.context
    request.prefix = None
    request.prefix_items = 0
    if plan.store:
        # Stored whole and unlinked, this turn's record roots its chain for every node that resolves it
        # (core.cache.conversation_root); the engine's warm state is gone anyway: moving replica is free.
        if request.cache_key == _conversation_key(plan.owner, plan.root):
            request.cache_key = _conversation_key(plan.owner, plan.response.id)
        plan.root = plan.response.id
    return fitted.tokens


def response_of(
    request: CreateRequest, response_id: str, now: int, tools: list[msgspec.Raw], *, status: str
) -> Response:
    """The Response a create starts as: every request field echoed, defaults where the client sent none."""
    return Response(
        id=response_id,
        created_at=now,
        status=status,
        instructions=request.instructions,
        metadata=request.metadata or {},
        model=request.model or "",
        parallel_tool_calls=True if request.parallel_tool_calls is None else request.parallel_tool_calls,
        temperature=1.0 if request.temperature is None else request.temperature,
        tool_choice=_echo_choice(request.tool_choice),
        tools=list(tools),
        top_p=1.0 if request.top_p is None else request.top_p,
        previous_response_id=request.previous_response_id,
        store=True if request.store is None else request.store,
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


def queued_response(request: CreateRequest, response_id: str, now: int) -> Response | None:
    """The Response of a `response.queued` event (WebSocket mode), or None when the request's tools are
    malformed: the turn then fails with that error when it starts, and is not announced as queued."""
    try:
        tools = parse_tools(request.tools).echo
    except ProtocolError:
        return None
    return response_of(request, response_id, now, tools, status="queued")


def _structured_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    fmt = text.get("format") if text else None
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        return fmt
    return None


def _echo_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any]:
    return "auto" if choice is None else choice
