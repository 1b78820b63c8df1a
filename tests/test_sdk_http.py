"""HTTP conformance with the official `openai` SDK against a real `loopwire serve` subprocess.

Covers create (JSON and SSE), tool calling, retrieve / delete / input_items, chaining, compaction and
spec-shaped errors (PROTOCOL.md §1-4, §6, §8 HTTP). Raw urllib is used only where the SDK cannot send the
request (malformed JSON, wrong types, unknown paths).
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from typing import Any

import openai
import pydantic
import pytest
from conftest import API_KEY, ServerProcess
from openai.types.responses import (
    ResponseCompactionItem,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseFunctionToolCallItem,
    ResponseFunctionToolCallOutputItem,
    ResponseInProgressEvent,
    ResponseInputMessageItem,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)
from sdk_types import classes_by_type

MODEL = "sim-model"

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "units": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "days", "units"],
        "additionalProperties": False,
    },
    "strict": True,
}
TIME_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_time",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
}
JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "object": dict,
    "array": list,
}


# -- helpers -----------------------------------------------------------------------------------------------


STREAM_EVENT_CLASSES = classes_by_type(ResponseStreamEvent)
ITEM_CLASSES: dict[tuple[str, bool], type[pydantic.BaseModel]] = {
    ("message", False): ResponseInputMessageItem,
    ("message", True): ResponseOutputMessage,
    ("function_call", False): ResponseFunctionToolCallItem,
    ("function_call_output", False): ResponseFunctionToolCallOutputItem,
}


def raw_request(
    base_url: str, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"
) -> tuple[int, dict[str, str], Any]:
    """One plain HTTP request; returns (status, headers, parsed JSON body or raw text)."""
    origin = base_url.removesuffix("/v1")
    request = urllib.request.Request(origin + path, data=body, method=method)
    request.add_header("Authorization", f"Bearer {API_KEY}")
    if body is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status, headers, payload = answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        status, headers, payload = error.code, dict(error.headers), error.read()
    try:
        return status, headers, json.loads(payload)
    except ValueError:
        return status, headers, payload.decode(errors="replace")


def assert_error_body(body: Any, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}` with a non-empty message (PROTOCOL §6)."""
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) >= {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


def assert_server_healthy(server: ServerProcess, client: openai.OpenAI) -> None:
    assert server.alive(), f"server process died; log:\n{server.log_text()}"
    response = client.responses.create(model=MODEL, input="still there?")
    assert response.status == "completed"


def text_of_item(item: Any) -> str:
    """Text of a message item whether its content is a string or a list of parts."""
    content = item.content
    if isinstance(content, str):
        return content
    return "".join(
        getattr(part, "text", None) or (part.get("text", "") if isinstance(part, dict) else "")
        for part in content
    )


def check_arguments(arguments: str, tool: dict[str, Any]) -> dict[str, Any]:
    parsed = json.loads(arguments)
    assert isinstance(parsed, dict), arguments
    schema = tool["parameters"]
    for key in schema["required"]:
        assert key in parsed, f"required key {key!r} missing from {arguments}"
        expected = JSON_TYPES[schema["properties"][key]["type"]]
        assert isinstance(parsed[key], expected), f"{key}={parsed[key]!r} is not {expected}"
        enum = schema["properties"][key].get("enum")
        if enum is not None:
            assert parsed[key] in enum
    return parsed


def check_typed_stream(events: list[Any]) -> None:
    """Every event is the SDK's specific typed class and sequence numbers run 0..n-1 without gaps."""
    for event in events:
        expected = STREAM_EVENT_CLASSES.get(event.type)
        assert expected is not None, f"event type {event.type!r} is not an SDK stream event"
        assert type(event) is expected, (
            f"{event.type} parsed as {type(event).__name__}, not {expected.__name__}"
        )
    assert [event.sequence_number for event in events] == list(range(len(events)))


def collapse(types: list[str]) -> list[str]:
    """Event types with runs of the same delta type collapsed to one entry."""
    out: list[str] = []
    for kind in types:
        if kind.endswith(".delta") and out and out[-1] == kind:
            continue
        out.append(kind)
    return out


# -- create ----------------------------------------------------------------------------------------------


def test_create_string_input(strict_client: openai.OpenAI) -> None:
    response = strict_client.responses.create(model=MODEL, input="Say hello.")
    assert response.id.startswith("resp_")
    assert response.object == "response"
    assert response.status == "completed"
    assert response.error is None
    assert response.model == MODEL
    assert response.store is True
    assert response.previous_response_id is None
    assert len(response.output) == 1
    message = response.output[0]
    assert isinstance(message, ResponseOutputMessage)
    assert message.role == "assistant" and message.status == "completed"
    assert message.id.startswith("msg_")
    assert response.output_text.strip()
    usage = response.usage
    assert usage is not None
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_create_list_input_messages_without_type(strict_client: openai.OpenAI) -> None:
    response = strict_client.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "first, as a plain string"},
            {"role": "user", "content": [{"type": "input_text", "text": "second, as parts"}]},
        ],
    )
    assert response.status == "completed"
    assert response.output_text.strip()


def test_system_and_developer_messages(strict_client: openai.OpenAI) -> None:
    plain = strict_client.responses.create(model=MODEL, input=[{"role": "user", "content": "What now?"}])
    prompted = strict_client.responses.create(
        model=MODEL,
        input=[
            {"role": "system", "content": "You are a terse assistant who answers in one word."},
            {"role": "developer", "content": [{"type": "input_text", "text": "Never mention the weather."}]},
            {"role": "user", "content": "What now?"},
        ],
    )
    assert prompted.status == "completed"
    assert prompted.output_text.strip()
    assert plain.usage is not None and prompted.usage is not None
    # the system and developer messages reached the model: the prompt got longer
    assert prompted.usage.input_tokens > plain.usage.input_tokens


def test_instructions_and_metadata_echoed(strict_client: openai.OpenAI) -> None:
    metadata = {"session": "abc-123", "purpose": "integration test"}
    response = strict_client.responses.create(
        model=MODEL, input="hi", instructions="Be brief.", metadata=metadata
    )
    assert response.instructions == "Be brief."
    assert response.metadata == metadata
    fetched = strict_client.responses.retrieve(response.id)
    assert fetched.instructions == "Be brief."
    assert fetched.metadata == metadata


def test_assistant_history_with_phase_accepted(strict_client: openai.OpenAI) -> None:
    response = strict_client.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "Plan the trip."},
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_history_1",
                "status": "completed",
                "phase": "commentary",
                "content": [{"type": "output_text", "text": "Looking at options.", "annotations": []}],
            },
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_history_2",
                "status": "completed",
                "phase": "final_answer",
                "content": [{"type": "output_text", "text": "Take the train.", "annotations": []}],
            },
            {"role": "user", "content": "Why the train?"},
        ],
    )
    assert response.status == "completed"
    assert response.output_text.strip()


def test_input_image_accepted(strict_client: openai.OpenAI) -> None:
    pixel = (
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
        "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
    )
    response = strict_client.responses.create(
        model=MODEL,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in this image?"},
                    {"type": "input_image", "image_url": pixel, "detail": "auto"},
                ],
            }
        ],
    )
    assert response.status == "completed"
    assert response.output_text.strip()


def test_full_history_with_tool_and_reasoning_items(strict_client: openai.OpenAI) -> None:
    """A client resending the whole history without previous_response_id (as Codex does on a new socket)."""
    response = strict_client.responses.create(
        model=MODEL,
        tools=[WEATHER_TOOL],
        input=[
            {"role": "user", "content": "Weather in Bergen?"},
            {
                "type": "reasoning",
                "id": "rs_history_1",
                "summary": [{"type": "summary_text", "text": "Use the tool."}],
            },
            {
                "type": "function_call",
                "call_id": "call_history_1",
                "name": "get_weather",
                "arguments": json.dumps({"city": "Bergen", "days": 1, "units": "celsius"}),
                "status": "completed",
            },
            {
                "type": "function_call_output",
                "call_id": "call_history_1",
                "output": [{"type": "input_text", "text": "rain, 9 C"}],
            },
            {
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "It rains.", "annotations": []}],
            },
            {"role": "user", "content": "Thanks!"},
        ],
    )
    assert response.status == "completed"


def test_item_reference(client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL, input="Referenced turn.")
    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "item_reference", "id": first.output[0].id}, {"role": "user", "content": "Again?"}],
    )
    assert second.status == "completed"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input=[{"type": "item_reference", "id": "msg_not_anywhere"}])


def test_max_output_tokens_gives_incomplete(strict_client: openai.OpenAI) -> None:
    response = strict_client.responses.create(model=MODEL, input="Say a lot.", max_output_tokens=3)
    assert response.status == "incomplete"
    assert (
        response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    )
    stream = strict_client.responses.create(model=MODEL, input="Say a lot.", max_output_tokens=3, stream=True)
    with stream:
        events = list(stream)
    check_typed_stream(events)
    assert events[-1].type == "response.incomplete"


def test_unknown_extra_fields_ignored(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL,
        input=[{"role": "user", "content": "hi", "x_custom_item_field": {"nested": [1, 2]}}],
        extra_body={
            "x_unknown_field": True,
            "another_one": {"deep": [1, {"a": None}]},
            "prompt_cache_retention": "24h",
        },
    )
    assert response.status == "completed"
    assert response.output_text.strip()


# -- streaming -------------------------------------------------------------------------------------------


def test_stream_text_events_typed_and_ordered(strict_client: openai.OpenAI) -> None:
    stream = strict_client.responses.create(model=MODEL, input="Tell me something.", stream=True)
    with stream:
        events = list(stream)
    check_typed_stream(events)
    assert collapse([event.type for event in events]) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    created, in_progress, added, part_added = events[:4]
    assert isinstance(created, ResponseCreatedEvent) and isinstance(in_progress, ResponseInProgressEvent)
    assert created.response.status == "in_progress"
    assert isinstance(added, ResponseOutputItemAddedEvent) and isinstance(
        part_added, ResponseContentPartAddedEvent
    )
    item_id = added.item.id
    assert added.item.type == "message" and added.output_index == 0
    deltas = [event for event in events if isinstance(event, ResponseTextDeltaEvent)]
    assert len(deltas) >= 1
    assert all(
        delta.item_id == item_id and delta.output_index == 0 and delta.content_index == 0 for delta in deltas
    )
    text_done, part_done, item_done, completed = events[-4:]
    assert isinstance(text_done, ResponseTextDoneEvent)
    assert isinstance(part_done, ResponseContentPartDoneEvent)
    assert isinstance(item_done, ResponseOutputItemDoneEvent)
    assert isinstance(completed, ResponseCompletedEvent)
    text = "".join(delta.delta for delta in deltas)
    assert text and text == text_done.text
    assert part_done.part.type == "output_text" and part_done.part.text == text
    assert item_done.item.id == item_id
    assert completed.response.status == "completed"
    assert completed.response.output_text == text
    assert created.response.id == in_progress.response.id == completed.response.id
    # the streamed response is stored like a JSON one
    assert strict_client.responses.retrieve(completed.response.id).output_text == text


def test_sse_framing(base_url: str) -> None:
    """Raw SSE: every frame is `event: <type>` + `data: <json>` whose `type` matches, no [DONE] needed."""
    body = json.dumps({"model": MODEL, "input": "frames", "stream": True}).encode()
    status, headers, payload = raw_request(base_url, "POST", "/v1/responses", body)
    assert status == 200
    lowered = {key.lower(): value for key, value in headers.items()}
    assert lowered["content-type"].startswith("text/event-stream")
    frames = [frame for frame in payload.split("\n\n") if frame.strip()]
    assert frames
    types = []
    for frame in frames:
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if not line.startswith(":"))
        if fields.get("data") == "[DONE]":
            continue
        data = json.loads(fields["data"])
        assert fields["event"] == data["type"]
        assert "error" not in data, "a top-level error key makes the SDK raise"
        types.append(data["type"])
    assert types[0] == "response.created" and types[-1] == "response.completed"


def test_stream_helper_accumulates_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="Stream via the helper.") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == "".join(deltas) != ""


def test_stream_unknown_previous_id_is_http_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        stream = client.responses.create(
            model=MODEL, input="x", stream=True, previous_response_id=f"resp_{secrets.token_hex(16)}"
        )
        list(stream)
    assert caught.value.code == "previous_response_not_found"


# -- tool calling ----------------------------------------------------------------------------------------


def test_tool_call_required(strict_client: openai.OpenAI) -> None:
    response = strict_client.responses.create(
        model=MODEL, input="Weather in Paris for 3 days?", tools=[WEATHER_TOOL], tool_choice="required"
    )
    assert response.status == "completed"
    calls = [item for item in response.output if isinstance(item, ResponseFunctionToolCall)]
    assert len(calls) >= 1
    call = calls[0]
    assert call.name == "get_weather"
    assert call.call_id.startswith("call_")
    assert call.id is not None and call.id.startswith("fc_")
    assert call.status == "completed"
    check_arguments(call.arguments, WEATHER_TOOL)
    assert response.tools and response.tools[0].type == "function" and response.tools[0].name == "get_weather"
    assert response.tool_choice == "required"


def test_tool_call_named_tool_choice(strict_client: openai.OpenAI) -> None:
    response = strict_client.responses.create(
        model=MODEL,
        input="What time is it in Tokyo?",
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "name": "get_time"},
    )
    calls = [item for item in response.output if isinstance(item, ResponseFunctionToolCall)]
    assert calls and all(call.name == "get_time" for call in calls)
    check_arguments(calls[0].arguments, TIME_TOOL)


def test_tool_call_streamed_arguments(strict_client: openai.OpenAI) -> None:
    stream = strict_client.responses.create(
        model=MODEL, input="Weather in Oslo?", tools=[WEATHER_TOOL], tool_choice="required", stream=True
    )
    with stream:
        events = list(stream)
    check_typed_stream(events)
    types = collapse([event.type for event in events])
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert types[-1] == "response.completed"
    assert "response.function_call_arguments.delta" in types
    added = events[2]
    assert isinstance(added, ResponseOutputItemAddedEvent)
    assert added.item.type == "function_call"
    assert added.item.status == "in_progress" and added.item.arguments == ""
    deltas = [event for event in events if isinstance(event, ResponseFunctionCallArgumentsDeltaEvent)]
    done = [event for event in events if isinstance(event, ResponseFunctionCallArgumentsDoneEvent)]
    item_done = [event for event in events if isinstance(event, ResponseOutputItemDoneEvent)]
    assert len(done) == 1 and len(item_done) == 1
    assert all(delta.item_id == added.item.id for delta in deltas)
    arguments = "".join(delta.delta for delta in deltas)
    assert arguments == done[0].arguments
    assert done[0].name == "get_weather"
    assert item_done[0].item.type == "function_call" and item_done[0].item.arguments == arguments
    # delta, done, item.done, completed in that order
    index = {event.type: position for position, event in enumerate(events)}
    assert (
        index["response.function_call_arguments.done"]
        < index["response.output_item.done"]
        < index["response.completed"]
    )
    check_arguments(arguments, WEATHER_TOOL)
    final = events[-1]
    assert isinstance(final, ResponseCompletedEvent)
    output = final.response.output
    assert len(output) == 1 and isinstance(output[0], ResponseFunctionToolCall)
    assert output[0].arguments == arguments and output[0].call_id == added.item.call_id


def test_tool_loop_over_http(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model=MODEL, input="Weather in Rome?", tools=[WEATHER_TOOL], tool_choice="required"
    )
    call = next(item for item in first.output if isinstance(item, ResponseFunctionToolCall))
    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        tools=[WEATHER_TOOL],
        input=[
            {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"temp_c": 21})}
        ],
    )
    assert second.status == "completed"
    assert second.previous_response_id == first.id
    assert second.output_text.strip()


def test_function_call_output_unknown_call_id_rejected(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model=MODEL, input="Weather?", tools=[WEATHER_TOOL], tool_choice="required"
    )
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model=MODEL,
            previous_response_id=first.id,
            tools=[WEATHER_TOOL],
            input=[{"type": "function_call_output", "call_id": "call_never_issued", "output": "x"}],
        )
    assert caught.value.status_code == 400


# -- retrieve / delete / input items ----------------------------------------------------------------------


def test_retrieve(strict_client: openai.OpenAI) -> None:
    created = strict_client.responses.create(model=MODEL, input="remember me")
    fetched = strict_client.responses.retrieve(created.id)
    assert fetched.id == created.id
    assert fetched.status == "completed"
    assert fetched.output_text == created.output_text
    assert fetched.usage == created.usage


def test_retrieve_unknown_is_404(client: openai.OpenAI, base_url: str) -> None:
    missing = f"resp_{secrets.token_hex(16)}"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(missing)
    status, _, body = raw_request(base_url, "GET", f"/v1/responses/{missing}")
    assert status == 404
    assert_error_body(body)


def test_delete(client: openai.OpenAI) -> None:
    created = client.responses.create(model=MODEL, input="delete me")
    raw = client.responses.with_raw_response.delete(created.id)
    assert raw.status_code == 200
    assert raw.http_response.json() == {"id": created.id, "object": "response.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.delete(created.id)
    assert caught.value.status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(created.id)


def test_input_items_order_and_pagination(client: openai.OpenAI) -> None:
    texts = [f"message number {index}" for index in range(5)]
    created = client.responses.create(
        model=MODEL, input=[{"role": "user", "content": text} for text in texts]
    )

    default = client.responses.input_items.list(created.id)
    assert [text_of_item(item) for item in default.data] == texts[::-1]  # desc is the default
    assert default.has_more is False
    ascending = client.responses.input_items.list(created.id, order="asc")
    assert [text_of_item(item) for item in ascending.data] == texts
    ids = [item.id for item in ascending.data]
    assert all(isinstance(item_id, str) and item_id for item_id in ids)
    assert len(set(ids)) == len(ids)
    assert ascending.first_id == ids[0] and ascending.last_id == ids[-1]
    assert [item.id for item in default.data] == ids[::-1]

    page = client.responses.input_items.list(created.id, order="asc", limit=2)
    assert [item.id for item in page.data] == ids[:2]
    assert page.has_more is True
    assert page.first_id == ids[0] and page.last_id == ids[1]
    second = client.responses.input_items.list(created.id, order="asc", limit=2, after=page.last_id)
    assert [item.id for item in second.data] == ids[2:4]
    assert second.has_more is True
    third = client.responses.input_items.list(created.id, order="asc", limit=2, after=second.last_id)
    assert [item.id for item in third.data] == ids[4:]
    assert third.has_more is False

    desc_page = client.responses.input_items.list(created.id, limit=3)
    assert [item.id for item in desc_page.data] == ids[::-1][:3] and desc_page.has_more is True
    # the SDK's auto-pagination follows `after` to the end
    assert [item.id for item in client.responses.input_items.list(created.id, limit=2)] == ids[::-1]


def test_input_items_of_chained_response_include_earlier_turns(client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL, input="the first turn")
    second = client.responses.create(model=MODEL, input="the second turn", previous_response_id=first.id)
    items = client.responses.input_items.list(second.id, order="asc").data
    assert [item.type for item in items] == ["message", "message", "message"]
    assert [item.role for item in items] == ["user", "assistant", "user"]
    assert text_of_item(items[0]) == "the first turn"
    assert items[1].id == first.output[0].id
    assert text_of_item(items[1]) == first.output_text
    assert text_of_item(items[2]) == "the second turn"
    # the earlier response's own items are unchanged
    assert [text_of_item(item) for item in client.responses.input_items.list(first.id).data] == [
        "the first turn"
    ]


def test_input_items_validate_against_sdk_types(client: openai.OpenAI, strict_client: openai.OpenAI) -> None:
    """The SDK types input items as ResponseItem: an input message has `id` and `content` as a list of parts
    (a string input is normalised to one input_text part), and a function_call_output item has `id` and
    `status`, as the API returns them."""
    first = client.responses.create(
        model=MODEL, input="plain string input", tools=[WEATHER_TOOL], tool_choice="required"
    )
    call = next(item for item in first.output if isinstance(item, ResponseFunctionToolCall))
    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        tools=[WEATHER_TOOL],
        input=[
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
            {"role": "user", "content": [{"type": "input_text", "text": "part content"}]},
        ],
    )
    raw = client.responses.input_items.with_raw_response.list(second.id, order="asc")
    data = raw.http_response.json()["data"]
    assert [item["type"] for item in data] == ["message", "function_call", "function_call_output", "message"]
    problems: list[str] = []
    for index, item in enumerate(data):
        expected = ITEM_CLASSES[item["type"], item.get("role") == "assistant"]
        try:
            expected.model_validate(item)
        except pydantic.ValidationError as error:
            details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            problems.append(f"data[{index}] {json.dumps(item)} is not a valid {expected.__name__}: {details}")
    assert not problems, "\n".join(problems)
    # and the SDK's own strict parsing accepts the page
    assert len(strict_client.responses.input_items.list(second.id).data) == 4


def test_input_items_bad_query_is_400(client: openai.OpenAI, base_url: str) -> None:
    created = client.responses.create(model=MODEL, input="x")
    for query in ("order=sideways", "limit=0", "limit=abc", "after=msg_nope"):
        status, _, body = raw_request(base_url, "GET", f"/v1/responses/{created.id}/input_items?{query}")
        assert status == 400, (query, body)
        assert_error_body(body)


def test_cancel_non_background_response(client: openai.OpenAI) -> None:
    created = client.responses.create(model=MODEL, input="not in the background")
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel(f"resp_{secrets.token_hex(16)}")


# -- chaining --------------------------------------------------------------------------------------------


def test_multi_turn_previous_response_id(strict_client: openai.OpenAI) -> None:
    first = strict_client.responses.create(
        model=MODEL, input="My name is Ada.", instructions="Be kind.", store=True
    )
    second = strict_client.responses.create(
        model=MODEL, input="What is my name?", previous_response_id=first.id
    )
    third = strict_client.responses.create(model=MODEL, input="And again?", previous_response_id=second.id)
    assert second.status == third.status == "completed"
    assert second.previous_response_id == first.id and third.previous_response_id == second.id
    # instructions are not inherited through previous_response_id
    assert second.instructions is None
    assert first.usage and second.usage and third.usage
    # the model saw the earlier turns: each prompt includes the previous input and output
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens - 1
    assert third.usage.input_tokens > second.usage.input_tokens + second.usage.output_tokens - 1
    fresh = strict_client.responses.create(model=MODEL, input="What is my name?")
    assert fresh.usage and second.usage.input_tokens > fresh.usage.input_tokens


def test_previous_response_id_unknown(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="hi", previous_response_id=f"resp_{secrets.token_hex(16)}")
    error = caught.value
    assert error.status_code == 400
    assert error.code == "previous_response_not_found"
    assert error.param == "previous_response_id"
    assert_error_body({"error": error.body})  # the SDK keeps the inner error object as .body


def test_store_false_is_not_retrievable_or_chainable_over_http(client: openai.OpenAI) -> None:
    ephemeral = client.responses.create(model=MODEL, input="forget me", store=False)
    assert ephemeral.status == "completed" and ephemeral.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(ephemeral.id)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="next", previous_response_id=ephemeral.id)
    assert caught.value.code == "previous_response_not_found"


def test_deleted_response_cannot_be_continued(client: openai.OpenAI) -> None:
    created = client.responses.create(model=MODEL, input="short lived")
    client.responses.delete(created.id)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="next", previous_response_id=created.id)
    assert caught.value.code == "previous_response_not_found"


# -- compaction ------------------------------------------------------------------------------------------


def test_compact_and_continue_from_window(client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL, input="Let's plan a long project.")
    second = client.responses.create(model=MODEL, input="Add a testing phase.", previous_response_id=first.id)
    history = [
        {"role": "user", "content": "Let's plan a long project."},
        *[item.to_dict() for item in first.output],
        {"role": "user", "content": "Add a testing phase."},
        *[item.to_dict() for item in second.output],
    ]
    compacted = client.responses.compact(model=MODEL, input=history)  # type: ignore[arg-type]
    assert compacted.object == "response.compaction"
    assert compacted.id
    assert compacted.output, "a compacted window is never empty"
    last = compacted.output[-1]
    assert isinstance(last, ResponseCompactionItem)
    assert last.type == "compaction" and last.encrypted_content
    assert compacted.usage is not None

    # the SDK types compact output as output items, so user messages in it are loosely constructed
    window = [item.to_dict(warnings=False) for item in compacted.output]
    follow = client.responses.create(model=MODEL, input=[*window, {"role": "user", "content": "What next?"}])
    assert follow.status == "completed"
    assert follow.output_text.strip()
    assert follow.previous_response_id is None
    # and the new chain continues normally
    again = client.responses.create(model=MODEL, input="And after that?", previous_response_id=follow.id)
    assert again.status == "completed"


def test_compact_from_previous_response_id(client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL, input="Remember the codeword: heron.")
    compacted = client.responses.compact(model=MODEL, previous_response_id=first.id)  # type: ignore[arg-type]
    assert compacted.object == "response.compaction"
    assert isinstance(compacted.output[-1], ResponseCompactionItem)


def test_compact_without_model(base_url: str) -> None:
    body = json.dumps({"input": [{"role": "user", "content": "compact me"}]}).encode()
    status, _, payload = raw_request(base_url, "POST", "/v1/responses/compact", body)
    assert status in (400, 422), payload
    assert_error_body(payload)


# -- bad input never crashes the server ------------------------------------------------------------------


def test_malformed_json_body(server: ServerProcess, client: openai.OpenAI, base_url: str) -> None:
    for body in (b'{"model": "m", "input": ', b"{bad json}", b"\xff\xfe\x00garbage", b""):
        status, headers, payload = raw_request(base_url, "POST", "/v1/responses", body)
        assert status == 400, (body, payload)
        assert headers.get("content-type", headers.get("Content-Type", "")).startswith("application/json")
        error = assert_error_body(payload)
        assert error["type"] == "invalid_request_error"
    assert_server_healthy(server, client)


@pytest.mark.parametrize(
    "body",
    [
        {"model": 42, "input": "x"},
        {"model": MODEL, "input": 42},
        {"model": MODEL, "input": {"role": "user"}},
        {"model": MODEL, "input": "x", "metadata": {"k": 1}},
        {"model": MODEL, "input": "x", "metadata": "nope"},
        {"model": MODEL, "input": "x", "tools": "nope"},
        {"model": MODEL, "input": "x", "tools": [{"type": "function"}]},
        {"model": MODEL, "input": "x", "temperature": "hot"},
        {"model": MODEL, "input": "x", "stream": "yes"},
        {"model": MODEL, "input": "x", "store": "maybe"},
        {"model": MODEL, "input": "x", "max_output_tokens": "many"},
        {"model": MODEL, "input": [{"role": "user", "content": 5}]},
        {"model": MODEL, "input": [{"role": "wizard", "content": "hi"}]},
        {"model": MODEL, "input": [{"type": "function_call_output", "output": "no call id"}]},
        {"model": MODEL, "input": "x", "tool_choice": 7},
        ["not", "an", "object"],
        "just a string",
        None,
    ],
    ids=lambda body: json.dumps(body)[:60],
)
def test_wrong_types_are_400(body: Any, base_url: str) -> None:
    status, _, payload = raw_request(base_url, "POST", "/v1/responses", json.dumps(body).encode())
    assert status == 400, payload
    assert_error_body(payload)


def test_wrong_types_leave_server_healthy(server: ServerProcess, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input=12345)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        client.responses.create(
            model=MODEL, input="x", extra_body={"tools": [{"type": "function", "name": 3}]}
        )
    assert_server_healthy(server, client)


def test_unknown_input_item_type(client: openai.OpenAI, base_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input=[{"type": "hologram", "content": "?"}])  # type: ignore[list-item]
    assert caught.value.status_code == 400
    body = json.dumps({"model": MODEL, "input": [{"type": "hologram"}]}).encode()
    status, _, payload = raw_request(base_url, "POST", "/v1/responses", body)
    assert status == 400
    error = assert_error_body(payload)
    assert error["param"] is None or error["param"].startswith("input")


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", 2.5), ("temperature", -0.1), ("top_p", 1.5), ("max_output_tokens", 0)],
)
def test_out_of_range_values(client: openai.OpenAI, field: str, value: float) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="x", **{field: value})  # type: ignore[arg-type]
    assert caught.value.status_code == 400
    assert caught.value.param == field


def test_metadata_limits(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="x", metadata={f"k{index}": "v" for index in range(17)})
    assert caught.value.param == "metadata"
    sixteen = {f"k{index}": "v" for index in range(16)}
    assert client.responses.create(model=MODEL, input="x", metadata=sixteen).metadata == sixteen


def test_missing_model(base_url: str) -> None:
    status, _, payload = raw_request(base_url, "POST", "/v1/responses", json.dumps({"input": "x"}).encode())
    assert status in (400, 422)
    assert_error_body(payload, param="model")


def test_background_over_http_is_refused_cleanly(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="x", background=True)
    assert caught.value.param == "background"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nope"),
        ("GET", "/v1/responses/resp_x/input_items/extra"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/"),
    ],
)
def test_unknown_path_is_404_json(base_url: str, method: str, path: str) -> None:
    body = b"{}" if method == "POST" else None
    status, headers, payload = raw_request(base_url, method, path, body)
    assert status == 404, payload
    assert headers.get("content-type", headers.get("Content-Type", "")).startswith("application/json")
    assert_error_body(payload)


def test_error_responses_are_not_retried(base_url: str) -> None:
    """4xx other than 408/409/429 carry `x-should-retry: false` so the SDK does not retry them."""
    status, headers, _ = raw_request(base_url, "POST", "/v1/responses", b"{bad")
    assert status == 400
    lowered = {key.lower(): value for key, value in headers.items()}
    assert lowered.get("x-should-retry") == "false"


def test_input_tokens_count_matches_the_usage_of_the_turn(client: openai.OpenAI) -> None:
    fields: dict[str, Any] = {"model": MODEL, "instructions": "be brief", "input": "count me, please"}
    counted = client.responses.input_tokens.count(**fields)
    assert counted.object == "response.input_tokens"
    created = client.responses.create(**fields)
    assert created.usage is not None and counted.input_tokens == created.usage.input_tokens
    follow = {"model": MODEL, "input": "and now?", "previous_response_id": created.id}
    counted_follow = client.responses.input_tokens.count(**follow)
    chained = client.responses.create(**follow)
    assert chained.usage is not None and counted_follow.input_tokens == chained.usage.input_tokens
    assert counted_follow.input_tokens > counted.input_tokens
