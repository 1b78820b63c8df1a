"""The create request, over HTTP (a JSON body) and WebSocket mode (a flat `response.create` event).

Owns decoding bytes into typed requests and naming what is wrong with them; does not resolve ids or state.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from .errors import ProtocolError, invalid_request, validation_error
from .items import InputItem, decode_item


class CreateRequest(msgspec.Struct, kw_only=True):
    model: str | None = None
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    tools: list[msgspec.Raw] | None = None
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
    client_metadata: dict[str, Any] | None = None
    """Codex CLI's per-turn metadata: not the SDK's, passed on only by an engine in front of a Responses
    server."""
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
RAW_INPUT = str | list[msgspec.Raw] | None


def _wire(cls: type[msgspec.Struct], **config: Any) -> Any:
    """`cls` with its `input` left as raw items: each is then decoded on its own, keeping the JSON it was
    sent as (fields this server does not model survive), and a bad one is named by its index."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for field in msgspec.structs.fields(cls):
        kind = RAW_INPUT if field.name == "input" else field.type
        if field.default is not msgspec.NODEFAULT:
            fields.append((field.name, kind, field.default))
        elif field.default_factory is not msgspec.NODEFAULT:
            fields.append((field.name, kind, msgspec.field(default_factory=field.default_factory)))
        else:
            fields.append((field.name, kind))
    return msgspec.defstruct("Wire" + cls.__name__, fields, kw_only=True, **config)


_WireCreate = _wire(CreateRequest)
_WireWsCreate = _wire(WsCreateEvent, tag_field="type", tag="response.create")
_WireCompact = _wire(CompactRequest)
_http_decoder = msgspec.json.Decoder(_WireCreate)
_ws_decoder = msgspec.json.Decoder(_WireWsCreate | _NeverSent)
_compact_decoder = msgspec.json.Decoder(_WireCompact)
_item_peek = msgspec.json.Decoder(dict[str, Any])


def decode_input(raws: list[msgspec.Raw]) -> list[InputItem]:
    """Each raw item typed; a message may omit `"type": "message"`. Raises ProtocolError naming the
    item and field (`input[2].type` for a type no version of the API defines)."""
    items: list[InputItem] = []
    for index, raw in enumerate(raws):
        try:
            items.append(decode_item(raw))
        except msgspec.ValidationError as error:
            if "missing required field `type`" not in str(error):
                raise validation_error(error, f"input[{index}]") from None
            items.append(_untyped_message(raw, index))
        except msgspec.DecodeError as error:
            raise _invalid_json(error) from None
    return items


def _untyped_message(raw: msgspec.Raw, index: int) -> InputItem:
    """An item without `type`: a message (it has a `role`), or an item reference (only an `id`)."""
    body = _item_peek.decode(raw)
    if "role" not in body and set(body) == {"id"}:
        return decode_item(msgspec.json.encode({"type": "item_reference", **body}))
    if "role" not in body:
        raise invalid_request(
            f"Missing required parameter: 'input[{index}].type'.",
            param=f"input[{index}].type",
            code="missing_required_parameter",
        )
    try:
        return decode_item(msgspec.json.encode({"type": "message", **body}))
    except msgspec.ValidationError as error:
        raise validation_error(error, f"input[{index}]") from None


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


def _decode(decoder: msgspec.json.Decoder[Any], data: bytes | str) -> Any:
    try:
        return _decode_once(decoder, data)
    except RecursionError:  # msgspec's guard, at ~1,000 levels (also while skipping unknown fields)
        raise too_deep() from None


def _decode_once(decoder: msgspec.json.Decoder[Any], data: bytes | str) -> Any:
    # ValidationError subclasses DecodeError, so it must be caught first.
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as error:
        try:  # a body that is not JSON at all says so, whatever msgspec met first
            _item_peek.decode(data)
        except msgspec.ValidationError:
            pass
        except msgspec.DecodeError as not_json:
            raise _invalid_json(not_json) from None
        raise validation_error(error) from None
    except msgspec.DecodeError as error:
        raise _invalid_json(error) from None


def _typed(wire: Any, cls: type[T]) -> T:
    fields = msgspec.structs.asdict(wire)
    if isinstance(wire.input, list):
        fields["input"] = decode_input(wire.input)
    return cls(**fields)


def decode_http_create(body: bytes) -> CreateRequest:
    return _typed(_decode(_http_decoder, body), CreateRequest)


def decode_compact(body: bytes) -> CompactRequest:
    return _typed(_decode(_compact_decoder, body), CompactRequest)


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
        wire = _decode(_ws_decoder, frame)
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
    if not isinstance(wire, _WireWsCreate):
        raise UnknownClientEvent("loopwire.never_sent")
    return _typed(wire, WsCreateEvent)


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
