"""The create request, over HTTP (a JSON body) and WebSocket mode (a flat `response.create` event).

Owns decoding bytes into typed requests and naming what is wrong with them; does not resolve ids or state.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from .errors import ProtocolError, invalid_request
from .items import InputItem


class FunctionTool(msgspec.Struct, tag_field="type", tag="function"):
    name: str
    parameters: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class CreateRequest(msgspec.Struct, kw_only=True):
    model: str | None = None
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    store: bool | None = None
    stream: bool | None = None
    background: bool | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    metadata: dict[str, str] | None = None
    truncation: str | None = None
    reasoning: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    include: list[str] | None = None
    prompt_cache_key: str | None = None
    user: str | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None
    conversation: Any = None
    context_management: Any = None


class WsCreateEvent(CreateRequest, kw_only=True, tag_field="type", tag="response.create"):
    stream_id: str | None = None
    generate: bool | None = None


class _NeverSent(msgspec.Struct, tag_field="type", tag="loopwire.never_sent"):
    """Makes the WebSocket decoder a tagged union, so msgspec requires `type` (a lone tagged struct
    would accept a frame without it)."""


class CompactRequest(msgspec.Struct, kw_only=True):
    model: str | None = None
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None


T = TypeVar("T")

_http_decoder = msgspec.json.Decoder(CreateRequest)
_ws_decoder = msgspec.json.Decoder(WsCreateEvent | _NeverSent)
_compact_decoder = msgspec.json.Decoder(CompactRequest)
_loose_decoder = msgspec.json.Decoder()

_PATH = re.compile(r" - at `\$\.?(.*)`$")


def _param_of(error: msgspec.ValidationError) -> tuple[str, str | None]:
    text = str(error)
    match = _PATH.search(text)
    if match is None:
        return text, None
    return text[: match.start()], match.group(1) or None


def _validation_error(error: msgspec.ValidationError) -> ProtocolError:
    message, param = _param_of(error)
    if param is None:
        return invalid_request(f"Invalid request body: {message}.", code="invalid_type")
    return invalid_request(f"Invalid value for '{param}': {message}.", param=param, code="invalid_type")


def _with_message_types(obj: Any) -> Any:
    """Messages may omit `"type": "message"`; add it so the tagged union can decode them."""
    if isinstance(obj, dict):
        items = obj.get("input")
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and "type" not in item and "role" in item:
                    item["type"] = "message"
    return obj


def _invalid_json(error: msgspec.DecodeError) -> ProtocolError:
    return ProtocolError(
        400, f"We could not parse the JSON body of your request: {error}.", code="invalid_json"
    )


def too_deep(param: str | None = None, limit: int | None = None) -> ProtocolError:
    """JSON nested past what the decoder goes (anywhere, even in an unknown field), or a kept value past
    `limit` levels."""
    where = f"'{param}'" if param is not None else "The request body"
    most = f"; at most {limit} levels are accepted" if limit is not None else ""
    return invalid_request(f"{where} nests JSON too deeply{most}.", param=param, code="json_too_deep")


def _decode(decoder: msgspec.json.Decoder[T], data: bytes | str, kind: type[T]) -> T:
    try:
        return _decode_once(decoder, data, kind)
    except RecursionError:  # msgspec's guard, at ~1,000 levels (also while skipping unknown fields)
        raise too_deep() from None


def _decode_once(decoder: msgspec.json.Decoder[T], data: bytes | str, kind: type[T]) -> T:
    # ValidationError subclasses DecodeError, so it must be caught first, here and below.
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as first:
        # The only lenient case: message items written without a type. Retry once on the loose shape.
        if "missing required field `type`" not in str(first):
            raise _validation_error(first) from None
        try:
            loose = _with_message_types(_loose_decoder.decode(data))
            return msgspec.convert(loose, kind)
        except msgspec.ValidationError as second:
            raise _validation_error(second) from None
        except msgspec.DecodeError as error:
            raise _invalid_json(error) from None
    except msgspec.DecodeError as error:
        raise _invalid_json(error) from None


def decode_http_create(body: bytes) -> CreateRequest:
    return _decode(_http_decoder, body, CreateRequest)


def decode_compact(body: bytes) -> CompactRequest:
    return _decode(_compact_decoder, body, CompactRequest)


class UnknownClientEvent(ProtocolError):
    def __init__(self, event_type: str) -> None:
        super().__init__(
            400,
            f"Unsupported client event type '{event_type}'. This server accepts 'response.create'.",
            code="unknown_event_type",
            param="type",
        )
        self.event_type = event_type


_ws_peek = msgspec.json.Decoder(dict[str, Any])


def decode_ws_event(frame: bytes | str) -> WsCreateEvent:
    """Decode one client frame. Raises ProtocolError: UnknownClientEvent for a well-formed event of another
    type, else the error naming what is wrong (the caller reads the frame's stream_id with
    `peek_stream_id` to route it)."""
    try:
        event = _decode(_ws_decoder, frame, WsCreateEvent | _NeverSent)  # type: ignore[arg-type]
    except ProtocolError as error:
        if error.code in ("invalid_json", "json_too_deep"):
            raise
        envelope = _envelope(frame) if error.param in ("type", None) else None
        if envelope is None and error.param is None:
            raise invalid_request(
                "Each WebSocket message must be a JSON object with a string 'type'.",
                param="type",
                code="invalid_event",
            ) from None
        if envelope is not None:
            event_type = envelope.get("type")
            if not isinstance(event_type, str):
                raise invalid_request(
                    "Each WebSocket message must be a JSON object with a string 'type'.",
                    param="type",
                    code="invalid_event",
                ) from None
            if event_type != "response.create":
                raise UnknownClientEvent(event_type) from None
        raise
    if not isinstance(event, WsCreateEvent):
        raise UnknownClientEvent("loopwire.never_sent")
    return event


def _envelope(frame: bytes | str) -> dict[str, Any] | None:
    try:
        return _ws_peek.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None


def peek_stream_id(frame: bytes | str) -> str | None:
    """Best-effort stream_id of a frame that failed to decode, so its error reaches the right lane."""
    envelope = _envelope(frame)
    stream_id = envelope.get("stream_id") if envelope is not None else None
    return stream_id if isinstance(stream_id, str) else None
