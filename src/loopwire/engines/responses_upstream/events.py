"""Upstream Responses streaming events (the same JSON over SSE and WebSocket) into engine deltas.

Owns decoding events, following output items, the terminal outcome and usage; must not do I/O or retry.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from ..base import (
    EngineDelta,
    EngineError,
    ReasoningDelta,
    StopReason,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallStart,
    UpstreamEvent,
    UpstreamItem,
    Usage,
)

PREVIOUS_NOT_FOUND = "previous_response_not_found"


class UpstreamFailure(EngineError):
    """The upstream could not serve the turn. `replay`: it did not find the `previous_response_id` we
    sent, so the same turn with the whole history will work (nothing was produced yet)."""

    def __init__(self, message: str, *, code: str = "upstream_error", replay: bool = False) -> None:
        super().__init__(message, code=code)
        self.replay = replay


class _Item(msgspec.Struct):
    type: str = ""
    id: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    input: str | None = None  # a custom tool call's
    namespace: str | None = None
    encrypted_content: str | None = None  # a reasoning item's


class _InputDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _OutputDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    input_tokens_details: _InputDetails | None = None
    output_tokens_details: _OutputDetails | None = None


class _Error(msgspec.Struct):
    message: str | None = None
    code: str | None = None
    type: str | None = None


class _Response(msgspec.Struct):
    id: str = ""
    status: str | None = None
    usage: _Usage | None = None
    error: _Error | None = None


class _Event(msgspec.Struct):
    """The fields of every event type this parser reads; the rest of each event is skipped unread."""

    type: str
    delta: str | None = None
    item: _Item | None = None
    item_id: str | None = None
    arguments: str | None = None
    input: str | None = None
    summary_index: int = 0
    response: _Response | None = None
    error: _Error | None = None
    code: str | None = None  # an SSE `error` event has its fields at the top level
    message: str | None = None


class _Head(msgspec.Struct):
    type: str = ""


class _ItemOnly(msgspec.Struct):
    item: msgspec.Raw


_decode_event = msgspec.json.Decoder(_Event).decode
_decode_item_json = msgspec.json.Decoder(_ItemOnly).decode

_CALLS = frozenset({"function_call", "custom_tool_call"})
_STREAMED_ITEMS = frozenset({"message", "function_call", "custom_tool_call", "reasoning"})
"""Output item types whose content arrives as deltas; every other type is passed on as it is."""
_FORWARDED_PREFIXES = (
    "response.web_search_call.",
    "response.file_search_call.",
    "response.code_interpreter_call",
    "response.image_generation_call.",
    "response.mcp_call",
    "response.mcp_list_tools.",
    "response.shell_call_command.",
    "response.shell_call_output_content.",
)
"""The progress events of the items an upstream runs itself, passed on (renumbered by the core)."""
_decode_head = msgspec.json.Decoder(_Head).decode
_decode_error_body = msgspec.json.Decoder(dict[str, Any]).decode

_HANDLED = frozenset(
    {
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
        "response.completed",
        "response.incomplete",
        "response.failed",
        "error",
    }
)


def failure_from(code: str | None, message: str | None, what: str) -> UpstreamFailure:
    text = f"the upstream {what}: {message or 'no details'}" + (f" ({code})" if code else "")
    if code == PREVIOUS_NOT_FOUND:
        return UpstreamFailure(text, replay=True)
    return UpstreamFailure(text)


def error_body_failure(status: int, body: bytes, reason: str | None) -> UpstreamFailure:
    """A non-2xx answer: its `{"error": {...}}` body, when it has one, names the cause."""
    code: str | None = None
    message = reason or "no details"
    try:
        error = _decode_error_body(body).get("error")
    except (msgspec.DecodeError, ValueError):
        error = None
    if isinstance(error, dict):
        code = error.get("code") if isinstance(error.get("code"), str) else None
        if isinstance(error.get("message"), str):
            message = error["message"]
    elif body.strip():
        message = body[:300].decode("utf-8", "replace")
    return failure_from(code, message, f"answered HTTP {status}")


class EventParser:
    """Feed it the events of one upstream response in order; `feed` returns the deltas each completes.

    After the terminal event `done` is set and `usage`, `stop_reason` and `response_id` hold the outcome;
    a failed response or an error event raises UpstreamFailure. Argument deltas must belong to the
    function call started last (upstreams stream output items one after another)."""

    __slots__ = (
        "_call_arguments",
        "_call_item",
        "calls",
        "done",
        "events",
        "output_chars",
        "response_id",
        "stop_reason",
        "usage",
    )

    def __init__(self) -> None:
        self.response_id = ""
        self.done = False
        self.events = 0
        self.calls = 0
        self.output_chars = 0  # for the estimate when the upstream reports no usage
        self.usage: Usage | None = None
        self.stop_reason: StopReason = "stop"
        self._call_item: str | None = None  # the item id of the open function call
        self._call_arguments: list[str] = []

    def feed(self, data: bytes | str) -> list[EngineDelta]:
        if self.done:
            return []
        try:
            event = _decode_event(data)
        except msgspec.ValidationError:
            if _decode_head(data).type in _HANDLED:
                raise UpstreamFailure("the upstream sent a malformed event") from None
            return []  # an event type we do not read, whose fields differ from the ones we do
        except msgspec.DecodeError:
            raise UpstreamFailure("the upstream sent an event that is not JSON") from None
        self.events += 1
        kind = event.type
        if kind == "response.output_text.delta" or kind == "response.refusal.delta":
            if not event.delta:
                return []
            self.output_chars += len(event.delta)
            return [TextDelta(event.delta)]
        if kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            if not event.delta:
                return []
            self.output_chars += len(event.delta)
            part: Literal["text", "summary"] = (
                "text" if kind == "response.reasoning_text.delta" else "summary"
            )
            return [ReasoningDelta(event.delta, part, event.summary_index, item_id=event.item_id)]
        if kind in ("response.function_call_arguments.delta", "response.custom_tool_call_input.delta"):
            if not event.delta:
                return []
            self._check_call(event.item_id)
            self._call_arguments.append(event.delta)
            self.output_chars += len(event.delta)
            return [ToolArgumentsDelta(event.delta)]
        if kind.startswith(_FORWARDED_PREFIXES):
            return [UpstreamEvent(data if isinstance(data, bytes) else data.encode())]
        if kind == "response.output_item.added":
            return self._added(event.item, data)
        if kind == "response.function_call_arguments.done":
            return self._arguments_done(event.item_id, event.arguments)
        if kind == "response.custom_tool_call_input.done":
            return self._arguments_done(event.item_id, event.input)
        if kind == "response.output_item.done":
            return self._item_done(event.item, data)
        if kind in ("response.created", "response.in_progress"):
            if event.response is not None and event.response.id:
                self.response_id = event.response.id
            return []
        if kind in ("response.completed", "response.incomplete"):
            self._finish(event.response, incomplete=kind == "response.incomplete")
            return []
        if kind == "response.failed":
            self.done = True
            error = event.response.error if event.response is not None else None
            raise failure_from(error.code if error else None, error.message if error else None, "failed")
        if kind == "error":
            self.done = True
            error = event.error
            code = error.code if error is not None else event.code
            message = error.message if error is not None else event.message
            raise failure_from(code, message, "refused the turn")
        return []

    def _added(self, item: _Item | None, data: bytes | str) -> list[EngineDelta]:
        if item is not None and item.type == "reasoning":
            return [ReasoningDelta("", item_id=item.id)]  # opens the item under the upstream's id
        if item is not None and item.type not in _STREAMED_ITEMS:
            return [UpstreamItem(bytes(_decode_item_json(data).item), done=False)]
        if item is None or item.type not in _CALLS:
            return []
        if not item.call_id or not item.name:
            raise UpstreamFailure("the upstream started a tool call without call_id or name")
        self.calls += 1
        self._call_item = item.id
        self._call_arguments = []
        custom = item.type == "custom_tool_call"
        start = ToolCallStart(item.call_id, item.name, "custom" if custom else "function", item.namespace)
        deltas: list[EngineDelta] = [start]
        initial = item.input if custom else item.arguments
        if initial:
            self._call_arguments.append(initial)
            deltas.append(ToolArgumentsDelta(initial))
        return deltas

    def _item_done(self, item: _Item | None, data: bytes | str) -> list[EngineDelta]:
        if item is None:
            return []
        if item.type in _CALLS:
            return self._arguments_done(
                item.id, item.input if item.type == "custom_tool_call" else item.arguments
            )
        if item.type == "reasoning":
            if item.encrypted_content is None:
                return []
            return [ReasoningDelta("", encrypted_content=item.encrypted_content, item_id=item.id)]
        if item.type in _STREAMED_ITEMS:
            return []
        # a hosted tool's item (web search, MCP, code interpreter, ...): the upstream ran it; pass it on
        return [UpstreamItem(bytes(_decode_item_json(data).item))]

    def _check_call(self, item_id: str | None) -> None:
        if self.calls == 0:
            raise UpstreamFailure("the upstream sent function call arguments before any call")
        if item_id is not None and self._call_item is not None and item_id != self._call_item:
            raise UpstreamFailure("the upstream interleaved the arguments of two function calls")

    def _arguments_done(self, item_id: str | None, arguments: str | None) -> list[EngineDelta]:
        """The final arguments: whatever was not streamed as deltas is sent now."""
        if arguments is None or self.calls == 0 or (item_id is not None and item_id != self._call_item):
            return []
        sent = "".join(self._call_arguments)
        if arguments == sent:
            return []
        if not arguments.startswith(sent):
            raise UpstreamFailure("the upstream's final call arguments differ from the streamed ones")
        rest = arguments[len(sent) :]
        self._call_arguments = [arguments]
        self.output_chars += len(rest)
        return [ToolArgumentsDelta(rest)]

    def _finish(self, response: _Response | None, *, incomplete: bool) -> None:
        self.done = True
        if response is not None:
            if response.id:
                self.response_id = response.id
            usage = response.usage
            if usage is not None:
                inputs, outputs = usage.input_tokens_details, usage.output_tokens_details
                self.usage = Usage(
                    input_tokens=usage.input_tokens,
                    cached_tokens=(inputs.cached_tokens or 0) if inputs is not None else 0,
                    output_tokens=usage.output_tokens,
                    reasoning_tokens=(outputs.reasoning_tokens or 0) if outputs is not None else 0,
                )
        if incomplete:
            self.stop_reason = "length"
        elif self.calls:
            self.stop_reason = "tool_calls"
