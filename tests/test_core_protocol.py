"""Edge tests of the wire layer: request decoding, error shapes, event encoding and Context.

Pure code, real objects: bytes in, typed values or ProtocolError out; no server, no engine.
"""

from __future__ import annotations

import json

import msgspec
import pytest

from loopwire.protocol.context import EMPTY_CONTEXT, Context
from loopwire.protocol.errors import ProtocolError, previous_response_not_found
from loopwire.protocol.events import (
    OutputItemAdded,
    OutputTextDelta,
    ResponseCompleted,
    ResponseCreated,
    encode,
    event_type,
    sse_frame,
)
from loopwire.protocol.items import (
    FunctionCall,
    FunctionCallOutput,
    InputText,
    ItemReference,
    Message,
    OutputText,
    Reasoning,
)
from loopwire.protocol.request import (
    CompactRequest,
    CreateRequest,
    UnknownClientEvent,
    WsCreateEvent,
    decode_compact,
    decode_http_create,
    decode_ws_event,
    peek_stream_id,
)
from loopwire.protocol.response import Response
from loopwire.protocol.tools import FunctionTool, parse_tools


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def ws_frame(**fields: object) -> bytes:
    return json.dumps({"type": "response.create", **fields}).encode()


def raises(fn, data: bytes | str) -> ProtocolError:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError) as info:
        fn(data)
    return info.value


# -- decode_http_create -------------------------------------------------------------------------------


def test_http_create_valid_full_body() -> None:
    request = decode_http_create(
        body(
            model="m",
            input=[
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                {
                    "type": "message",
                    "role": "assistant",
                    "id": "msg_1",
                    "status": "completed",
                    "phase": "final",
                    "content": [{"type": "output_text", "text": "yo", "annotations": []}],
                },
                {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "42"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "item_reference", "id": "msg_1"},
            ],
            instructions="be brief",
            tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            tool_choice="auto",
            store=False,
            stream=True,
            temperature=0.5,
            metadata={"k": "v"},
        )
    )
    assert isinstance(request, CreateRequest)
    assert request.model == "m"
    assert request.store is False and request.stream is True
    assert isinstance(request.input, list)
    kinds = [type(item) for item in request.input]
    assert kinds == [Message, Message, FunctionCall, FunctionCallOutput, Reasoning, ItemReference]
    first = request.input[0]
    assert isinstance(first, Message) and first.content == [InputText(text="hi")]
    second = request.input[1]
    assert isinstance(second, Message) and second.phase == "final"
    assert second.content == [OutputText(text="yo")]
    assert request.tools is not None
    assert parse_tools(request.tools).tools[0] == FunctionTool(name="f", parameters={"type": "object"})
    assert request.metadata == {"k": "v"}


def test_http_create_string_input() -> None:
    request = decode_http_create(body(model="m", input="hello"))
    assert request.input == "hello"


def test_http_create_accepts_str_as_well_as_bytes() -> None:
    assert decode_http_create('{"model": "m"}').model == "m"


def test_message_without_type_is_decoded_as_message() -> None:
    request = decode_http_create(
        body(
            model="m",
            input=[
                {"role": "user", "content": "a"},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {"role": "developer", "content": [{"type": "input_text", "text": "b"}]},
            ],
        )
    )
    assert isinstance(request.input, list)
    assert [type(item) for item in request.input] == [Message, FunctionCall, Message]
    assert isinstance(request.input[0], Message) and request.input[0].role == "user"
    assert isinstance(request.input[2], Message) and request.input[2].role == "developer"


@pytest.mark.parametrize("data", [b'{"model": "m",', b"not json", b"", b'{"model": "m"} trailing'])
def test_malformed_json_is_invalid_json(data: bytes) -> None:
    for decode in (decode_http_create, decode_ws_event, decode_compact):
        error = raises(decode, data)
        assert error.status == 400
        assert error.code == "invalid_json"


@pytest.mark.parametrize(
    ("input_items", "param"),
    [
        ([{"role": "user", "content": 5}], "input[0].content"),
        ([{"type": "message", "role": "user", "content": 5}], "input[0].content"),
        ([{"role": "user", "content": "ok"}, {"role": "user", "content": 7}], "input[1].content"),
        (
            [
                {"role": "user", "content": "ok"},
                {"type": "function_call_output", "call_id": 3, "output": "x"},
            ],
            "input[1].call_id",
        ),
        ([{"type": "message", "role": "robot", "content": "x"}], "input[0].role"),
        (
            [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": 1}]}],
            "input[0].content[0].text",
        ),
    ],
)
def test_wrong_types_name_the_param_path(input_items: list[object], param: str) -> None:
    for decode, data in (
        (decode_http_create, body(model="m", input=input_items)),
        (decode_ws_event, ws_frame(model="m", input=input_items)),
        (decode_compact, body(model="m", input=input_items)),
    ):
        error = raises(decode, data)
        assert error.status == 400
        assert error.code == "invalid_type"
        assert error.param == param, (decode.__name__, error.message)
        assert param in error.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", 5),
        ("temperature", "hot"),
        ("store", "yes"),
        ("metadata", {"k": 1}),
        ("tools", {"name": "f"}),
    ],
)
def test_wrong_top_level_types_name_the_field(field: str, value: object) -> None:
    error = raises(decode_http_create, body(**{"model": "m", field: value}))
    assert error.code == "invalid_type"
    assert error.param is not None and error.param.split(".")[0].split("[")[0] == field


def test_unknown_item_type_is_rejected_at_its_type() -> None:
    error = raises(decode_http_create, body(model="m", input=[{"type": "bogus_item", "x": 1}]))
    assert error.status == 400
    assert error.param == "input[0].type"
    assert "bogus_item" in error.message


def test_non_object_http_body_is_a_400_without_param() -> None:
    error = raises(decode_http_create, b"[1, 2]")
    assert error.status == 400
    assert error.code == "invalid_type"
    assert error.param is None


def test_unknown_extra_fields_are_ignored() -> None:
    request = decode_http_create(
        body(
            model="m",
            some_future_field={"x": [1]},
            another=3,
            input=[
                {"type": "message", "role": "user", "content": "hi", "extra": True},
                {"role": "user", "content": [{"type": "input_text", "text": "t", "cache_control": {}}]},
            ],
        )
    )
    assert request.model == "m"
    assert isinstance(request.input, list) and len(request.input) == 2
    event = decode_ws_event(ws_frame(model="m", future="x", stream_id="s"))
    assert event.stream_id == "s"
    compact = decode_compact(body(model="m", tools=[], unknown=1))
    assert compact.model == "m"


def test_http_body_with_type_field_is_fine() -> None:
    # An HTTP body is not a WebSocket event; a stray "type" key is just an unknown field.
    assert decode_http_create(body(type="response.create", model="m")).model == "m"


# -- decode_ws_event ----------------------------------------------------------------------------------


def test_ws_create_event_flat_body() -> None:
    event = decode_ws_event(
        ws_frame(
            model="m",
            input="hi",
            stream=True,
            stream_id="lane-1",
            generate=False,
            previous_response_id="resp_x",
        )
    )
    assert isinstance(event, WsCreateEvent)
    assert event.model == "m" and event.input == "hi"
    assert event.stream_id == "lane-1"
    assert event.generate is False
    assert event.previous_response_id == "resp_x"


def test_ws_message_without_type_in_input() -> None:
    event = decode_ws_event(ws_frame(model="m", input=[{"role": "user", "content": "hi"}]))
    assert isinstance(event.input, list) and isinstance(event.input[0], Message)


def test_ws_accepts_text_frames() -> None:
    assert decode_ws_event(ws_frame(model="m").decode()).model == "m"


@pytest.mark.parametrize("event_type", ["response.processed", "response.cancel", "session.update"])
def test_unknown_client_event_type(event_type: str) -> None:
    frame = json.dumps({"type": event_type, "stream_id": "s1", "response_id": "resp_1"}).encode()
    with pytest.raises(UnknownClientEvent) as info:
        decode_ws_event(frame)
    error = info.value
    assert error.event_type == event_type
    assert error.status == 400
    assert error.code == "unknown_event_type"
    assert error.param == "type"
    assert peek_stream_id(frame) == "s1"


def test_unknown_client_event_with_odd_fields_is_still_unknown_event() -> None:
    frame = json.dumps({"type": "response.processed", "model": 5, "input": 3}).encode()
    with pytest.raises(UnknownClientEvent):
        decode_ws_event(frame)


@pytest.mark.parametrize("frame", [b"[]", b"[1, 2]", b"123", b'"response.create"', b"null", b"true"])
def test_non_object_frame_is_invalid_event(frame: bytes) -> None:
    error = raises(decode_ws_event, frame)
    assert not isinstance(error, UnknownClientEvent)
    assert error.status == 400
    assert error.code == "invalid_event"
    assert error.param == "type"


def test_frame_with_non_string_type_is_invalid_event() -> None:
    error = raises(decode_ws_event, b'{"type": 5, "model": "m"}')
    assert error.code == "invalid_event"
    assert error.param == "type"


@pytest.mark.parametrize("frame", [b"{}", b'{"model": "m", "input": "hi"}'])
def test_frame_without_type_is_invalid_event(frame: bytes) -> None:
    # §5: the client event carries the create body flat *beside `type`*; a frame with no type is not a
    # response.create (the decoder's own message says "a JSON object with a string 'type'").
    error = raises(decode_ws_event, frame)
    assert error.code == "invalid_event"
    assert error.param == "type"


def test_ws_wrong_field_type_is_not_reported_as_unknown_event() -> None:
    error = raises(decode_ws_event, ws_frame(model=5))
    assert not isinstance(error, UnknownClientEvent)
    assert error.code == "invalid_type"
    assert error.param == "model"


def test_peek_stream_id_best_effort() -> None:
    assert peek_stream_id(b'{"type": "x", "stream_id": "abc"}') == "abc"
    assert peek_stream_id(b'{"type": "x", "stream_id": 5}') is None
    assert peek_stream_id(b"not json") is None
    assert peek_stream_id(b"[1]") is None


# -- decode_compact -----------------------------------------------------------------------------------


def test_compact_valid_body() -> None:
    request = decode_compact(
        body(
            model="m",
            input=[{"role": "user", "content": "hi"}],
            previous_response_id="resp_1",
            instructions="x",
        )
    )
    assert isinstance(request, CompactRequest)
    assert request.model == "m"
    assert request.previous_response_id == "resp_1"
    assert isinstance(request.input, list) and isinstance(request.input[0], Message)


def test_compact_without_model_decodes_with_model_none() -> None:
    # Decoding does not require a model; the 400/422 for it is the endpoint's job.
    assert decode_compact(body(input="hi")).model is None


# -- ProtocolError shapes -----------------------------------------------------------------------------


def test_http_body_shape() -> None:
    error = previous_response_not_found("resp_gone")
    decoded = json.loads(error.http_body())
    assert list(decoded) == ["error"]
    assert decoded["error"] == {
        "message": "Previous response with id 'resp_gone' not found.",
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }
    assert error.status == 400


def test_http_body_with_null_param_and_code() -> None:
    decoded = json.loads(ProtocolError(500, "boom", type="server_error").http_body())
    assert decoded == {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}


def test_ws_event_shape_without_stream_id() -> None:
    raw = previous_response_not_found("resp_gone").ws_event()
    assert raw.startswith(b'{"type":"error"')
    decoded = json.loads(raw)
    assert "stream_id" not in decoded
    assert decoded["type"] == "error"
    assert decoded["status"] == 400
    assert decoded["error"]["code"] == "previous_response_not_found"
    assert decoded["error"]["param"] == "previous_response_id"
    assert decoded["error"]["type"] == "invalid_request_error"
    assert set(decoded["error"]) == {"message", "type", "param", "code"}


def test_ws_event_shape_with_stream_id() -> None:
    decoded = json.loads(ProtocolError(429, "slow down", code="c").ws_event("lane.7"))
    assert decoded["stream_id"] == "lane.7"
    assert decoded["status"] == 429
    assert decoded["error"]["code"] == "c"


def test_ws_event_with_empty_stream_id_keeps_it() -> None:
    # "only when given": an empty string is given, None is not.
    assert json.loads(ProtocolError(400, "x").ws_event(""))["stream_id"] == ""


# -- event encoding -----------------------------------------------------------------------------------


def _response() -> Response:
    return Response(id="resp_1", created_at=1_700_000_000, status="in_progress", model="m")


def test_sse_frame_format() -> None:
    assert sse_frame("response.created", b'{"a":1}') == b'event: response.created\ndata: {"a":1}\n\n'


def test_event_encoding_type_first_and_sequence_number() -> None:
    event = OutputTextDelta(
        sequence_number=4, item_id="msg_1", output_index=0, content_index=0, delta="hi", logprobs=[]
    )
    raw = encode(event)
    assert raw.startswith(b'{"type":"response.output_text.delta",')
    decoded = json.loads(raw)
    assert next(iter(decoded)) == "type"
    assert decoded == {
        "type": "response.output_text.delta",
        "sequence_number": 4,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": "hi",
        "logprobs": [],
    }
    assert event_type(event) == "response.output_text.delta"


def test_stream_id_omitted_when_none_and_present_when_set() -> None:
    without = json.loads(encode(ResponseCreated(sequence_number=0, response=_response())))
    assert "stream_id" not in without
    assert without["type"] == "response.created"
    assert without["sequence_number"] == 0
    assert without["response"]["id"] == "resp_1"
    with_lane = json.loads(encode(ResponseCreated(sequence_number=0, stream_id="s", response=_response())))
    assert with_lane["stream_id"] == "s"


def test_sequence_number_zero_is_not_omitted() -> None:
    decoded = json.loads(
        encode(
            OutputItemAdded(
                sequence_number=0,
                output_index=0,
                item=Message(role="assistant", content=[], id="msg_1", status="in_progress"),
            )
        )
    )
    assert decoded["sequence_number"] == 0
    assert decoded["output_index"] == 0
    assert decoded["item"] == {
        "type": "message",
        "role": "assistant",
        "content": [],
        "id": "msg_1",
        "status": "in_progress",
    }


def test_raw_response_is_embedded_verbatim() -> None:
    encoded = encode(_response())
    event = ResponseCompleted(sequence_number=9, stream_id="x", response=msgspec.Raw(encoded))
    decoded = json.loads(encode(event))
    assert decoded["type"] == "response.completed"
    assert decoded["response"] == json.loads(encoded)
    assert "error" not in decoded


def test_sse_frame_of_encoded_event_round_trips() -> None:
    event = ResponseCreated(sequence_number=0, response=_response())
    frame = sse_frame(event_type(event), encode(event))
    head, data_line, *_ = frame.split(b"\n")
    assert head == b"event: response.created"
    assert json.loads(data_line.removeprefix(b"data: "))["type"] == "response.created"
    assert frame.endswith(b"\n\n") and frame.count(b"\n") == 3


# -- Context ------------------------------------------------------------------------------------------


def _msgs(*texts: str) -> list[Message]:
    return [Message(role="user", content=text) for text in texts]


def test_context_extend_and_iterate() -> None:
    a, b, c, d = _msgs("a", "b", "c", "d")
    ctx = EMPTY_CONTEXT.extend([a, b]).extend([c]).extend([d])
    assert len(ctx) == 4
    assert list(ctx) == [a, b, c, d]
    assert [item is orig for item, orig in zip(ctx, [a, b, c, d], strict=True)] == [True] * 4
    assert ctx.segments() == [(a, b), (c,), (d,)]


def test_context_extend_empty_returns_self() -> None:
    ctx = EMPTY_CONTEXT.extend(_msgs("a"))
    assert ctx.extend([]) is ctx
    assert EMPTY_CONTEXT.extend([]) is EMPTY_CONTEXT
    assert len(EMPTY_CONTEXT) == 0 and list(EMPTY_CONTEXT) == []


def test_context_extend_leaves_the_original_unchanged() -> None:
    base = EMPTY_CONTEXT.extend(_msgs("a", "b"))
    before = list(base)
    longer = base.extend(_msgs("c"))
    assert list(base) == before and len(base) == 2
    assert len(longer) == 3


def test_context_items_from() -> None:
    items = _msgs(*"abcdefghij")
    ctx = EMPTY_CONTEXT.extend(items[:3]).extend(items[3:4]).extend(items[4:8]).extend(items[8:])
    for start in range(0, 13):
        assert ctx.items_from(start) == items[start:], start
    assert ctx.items_from(10) == []
    assert ctx.items_from(100) == []


def test_forks_share_the_parent_without_copying() -> None:
    shared = EMPTY_CONTEXT.extend(_msgs("a", "b")).extend(_msgs("c"))
    left = shared.extend(_msgs("left"))
    right = shared.extend(_msgs("right-1", "right-2"))
    assert left.parent is shared and right.parent is shared
    assert left.items == (left.items[0],) and len(right.items) == 2  # only the new items are held
    # Shared segments are the very same tuples, not copies.
    assert left.segments()[:2] == right.segments()[:2]
    for x, y in zip(left.segments()[:2], right.segments()[:2], strict=True):
        assert x is y
    assert [m.content for m in left] == ["a", "b", "c", "left"]
    assert [m.content for m in right] == ["a", "b", "c", "right-1", "right-2"]
    assert len(shared) == 3


def test_context_from_empty_has_no_parent() -> None:
    ctx = EMPTY_CONTEXT.extend(_msgs("a"))
    assert ctx.parent is None
    assert isinstance(ctx, Context)


def test_ws_error_event_carries_status_and_headers_as_the_sdk_types_them() -> None:
    from openai.types.responses.responses_server_event import ResponseWsError

    from loopwire.protocol.errors import rate_limited

    event = json.loads(rate_limited(2.5).ws_event("lane-1"))
    typed = ResponseWsError.model_validate(event)
    assert typed.status == 429 and typed.stream_id == "lane-1"
    assert typed.error.headers is not None and "retry-after" in {k.lower() for k in typed.error.headers}
    plain = json.loads(previous_response_not_found("resp_x").ws_event())
    assert "headers" not in plain["error"] and ResponseWsError.model_validate(plain).status == 400
