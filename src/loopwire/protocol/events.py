"""Streaming events, identical on SSE and WebSocket, and their byte encodings.

Owns event shapes and framing (JSON, SSE); numbering and ordering belong to the turn that emits them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .items import OutputItem, OutputText, ReasoningText, SummaryText
from .response import Response


class Event(msgspec.Struct, kw_only=True, tag_field="type", omit_defaults=True):
    sequence_number: int
    stream_id: str | None = None


class ResponseCreated(Event, tag="response.created"):
    response: Response | msgspec.Raw


class ResponseInProgress(Event, tag="response.in_progress"):
    response: Response | msgspec.Raw


class ResponseCompleted(Event, tag="response.completed"):
    response: Response | msgspec.Raw


class ResponseFailed(Event, tag="response.failed"):
    response: Response | msgspec.Raw


class ResponseIncomplete(Event, tag="response.incomplete"):
    response: Response | msgspec.Raw


class OutputItemAdded(Event, tag="response.output_item.added"):
    output_index: int
    item: OutputItem | msgspec.Raw  # Raw: an item passed on whole, every field kept


class OutputItemDone(Event, tag="response.output_item.done"):
    output_index: int
    item: OutputItem | msgspec.Raw


class ResponseQueued(Event, tag="response.queued"):
    """WebSocket mode: the turn waits behind the connection's in-flight cap (or its lane's FIFO)."""

    response: Response | msgspec.Raw


class ContentPartAdded(Event, tag="response.content_part.added"):
    item_id: str
    output_index: int
    content_index: int
    part: OutputText | ReasoningText


class ContentPartDone(Event, tag="response.content_part.done"):
    item_id: str
    output_index: int
    content_index: int
    part: OutputText | ReasoningText


class OutputTextDelta(Event, tag="response.output_text.delta"):
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[Any]


class OutputTextDone(Event, tag="response.output_text.done"):
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Any]


class FunctionCallArgumentsDelta(Event, tag="response.function_call_arguments.delta"):
    item_id: str
    output_index: int
    delta: str


class FunctionCallArgumentsDone(Event, tag="response.function_call_arguments.done"):
    item_id: str
    output_index: int
    name: str
    arguments: str


class CustomToolCallInputDelta(Event, tag="response.custom_tool_call_input.delta"):
    item_id: str
    output_index: int
    delta: str


class CustomToolCallInputDone(Event, tag="response.custom_tool_call_input.done"):
    item_id: str
    output_index: int
    input: str


class ReasoningSummaryPartAdded(Event, tag="response.reasoning_summary_part.added"):
    item_id: str
    output_index: int
    summary_index: int
    part: SummaryText


class ReasoningSummaryPartDone(Event, tag="response.reasoning_summary_part.done"):
    item_id: str
    output_index: int
    summary_index: int
    part: SummaryText


class ReasoningSummaryTextDelta(Event, tag="response.reasoning_summary_text.delta"):
    item_id: str
    output_index: int
    summary_index: int
    delta: str


class ReasoningSummaryTextDone(Event, tag="response.reasoning_summary_text.done"):
    item_id: str
    output_index: int
    summary_index: int
    text: str


class ReasoningTextDelta(Event, tag="response.reasoning_text.delta"):
    item_id: str
    output_index: int
    content_index: int
    delta: str


class ReasoningTextDone(Event, tag="response.reasoning_text.done"):
    item_id: str
    output_index: int
    content_index: int
    text: str


class ForwardedEvent(Event, tag="loopwire.forwarded"):
    """An event passed on from an upstream as a whole (`body`, its JSON, already numbered for this
    stream); it goes out as `name` with that body, never as this struct."""

    name: str
    body: msgspec.Raw


class LoopwireTiming(Event, tag="loopwire.timing"):
    """Vendor event (prefixed, opt-in): where the server spent this turn's time, in milliseconds."""

    response_id: str
    timings: dict[str, float]


TERMINAL_EVENTS = (ResponseCompleted, ResponseFailed, ResponseIncomplete)

_encoder = msgspec.json.Encoder()
encode = _encoder.encode


def event_bytes(event: Event) -> bytes:
    """The event's JSON as sent (a forwarded event's own body)."""
    return bytes(event.body) if isinstance(event, ForwardedEvent) else _encoder.encode(event)


def event_type(event: Event) -> str:
    if isinstance(event, ForwardedEvent):
        return event.name
    tag = type(event).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def sse_frame(event_name: str, data: bytes) -> bytes:
    return b"event: " + event_name.encode() + b"\ndata: " + data + b"\n\n"
