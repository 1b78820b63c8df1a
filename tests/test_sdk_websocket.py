"""WebSocket mode conformance with the official `openai` SDK (`AsyncOpenAI().responses.connect()`) against a
real `loopwire serve` subprocess: every §8 WebSocket scenario of PROTOCOL.md, lanes, forks, FIFO, warmup,
client-event errors, and a SQLite-backed chain that survives a server restart.

Every received event is checked to be the SDK's specific typed class for its `type` and to validate
strictly against that class (the SDK itself only constructs events loosely).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import ServerProcess, make_async_client, make_client
from openai.resources.responses.responses import AsyncResponsesConnection as Connection
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage
from openai.types.responses.responses_server_event import ResponsesServerEvent, ResponseWsError
from sdk_types import classes_by_type

MODEL = "sim-model"
RECV_TIMEOUT_S = 10.0
SLOW_TTFT_MS = 300
TERMINAL = {"response.completed", "response.failed", "response.incomplete", "error"}

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}


WS_EVENT_CLASSES = classes_by_type(ResponsesServerEvent)


def check_event(event: Any) -> None:
    """The event is the SDK's specific class for its type, and its wire shape validates strictly."""
    expected = WS_EVENT_CLASSES.get(event.type)
    assert expected is not None, f"event type {event.type!r} is not a ResponsesServerEvent"
    assert type(event) is expected, f"{event.type} parsed as {type(event).__name__}, not {expected.__name__}"
    wire = event.to_dict(mode="json", exclude_unset=True, warnings=False)
    expected.model_validate(wire)  # raises pydantic.ValidationError on a missing or mistyped field


async def recv(conn: Connection) -> Any:
    event = await asyncio.wait_for(conn.recv(), RECV_TIMEOUT_S)
    check_event(event)
    return event


@dataclass
class Turn:
    events: list[Any] = field(default_factory=list)

    @property
    def terminal(self) -> Any:
        return self.events[-1]

    @property
    def ok(self) -> bool:
        return self.terminal.type == "response.completed"

    @property
    def response(self) -> Any:
        assert self.ok, f"turn did not complete: {self.terminal}"
        return self.terminal.response

    @property
    def error(self) -> ResponseWsError:
        assert self.terminal.type == "error", f"expected an error event, got {self.terminal.type}"
        return self.terminal

    @property
    def text(self) -> str:
        return "".join(event.delta for event in self.events if event.type == "response.output_text.delta")


async def collect(conn: Connection, stream_id: str | None = None) -> Turn:
    """Events of one turn on one lane, through its terminal event (nothing from other lanes expected)."""
    turn = Turn()
    while True:
        event = await recv(conn)
        assert getattr(event, "stream_id", None) == stream_id, f"event of another lane: {event}"
        turn.events.append(event)
        if event.type in TERMINAL:
            break
    check_turn(turn, stream_id)
    return turn


def check_turn(turn: Turn, stream_id: str | None) -> None:
    events = turn.events
    assert all(getattr(event, "stream_id", None) == stream_id for event in events)
    if events[-1].type == "error":
        assert len(events) == 1, f"an error event ended a turn that had started: {[e.type for e in events]}"
        return
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[0].type == "response.created"
    ids = {event.response.id for event in events if hasattr(event, "response")}
    assert len(ids) == 1, ids


async def turn(conn: Connection, **fields: Any) -> Turn:
    fields.setdefault("model", MODEL)
    await conn.response.create(**fields)
    return await collect(conn, fields.get("stream_id"))


@pytest.fixture
async def ws(async_client: openai.AsyncOpenAI) -> AsyncIterator[Connection]:
    async with async_client.responses.connect() as conn:
        yield conn


_ANY = object()


def assert_ws_error(
    event: ResponseWsError, *, code: str | None = None, status: int | None = 400, stream_id: Any = None
) -> None:
    assert event.type == "error"
    assert event.error.message
    assert event.error.type
    if code is not None:
        assert event.error.code == code, event
    if status is not None:
        assert event.status == status, event
    if status == 400:
        assert event.error.type == "invalid_request_error", event
    if stream_id is not _ANY:
        assert event.stream_id == stream_id, event


async def assert_usable(conn: Connection, stream_id: str | None = None) -> Turn:
    """The socket still serves a fresh turn, and it is the next thing that arrives."""
    fresh = await turn(
        conn, input="are you still there?", store=False, **({"stream_id": stream_id} if stream_id else {})
    )
    assert fresh.ok, fresh.terminal
    return fresh


def expected_text_types() -> list[str]:
    return [
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


def collapse(types: list[str]) -> list[str]:
    out: list[str] = []
    for kind in types:
        if kind.endswith(".delta") and out and out[-1] == kind:
            continue
        out.append(kind)
    return out


# -- §8 scenarios ----------------------------------------------------------------------------------------


async def test_one_turn(ws: Connection) -> None:
    result = await turn(ws, input="Hello over WebSocket.")
    assert collapse([event.type for event in result.events]) == expected_text_types()
    response = result.response
    assert response.status == "completed" and response.object == "response"
    assert response.id.startswith("resp_")
    assert response.store is True
    assert isinstance(response.output[0], ResponseOutputMessage)
    done = next(event for event in result.events if event.type == "response.output_text.done")
    assert result.text and result.text == done.text == response.output_text
    assert response.usage is not None and response.usage.input_tokens > 0


async def test_stream_true_in_frame_is_ignored(ws: Connection) -> None:
    result = await turn(ws, input="The agents SDK always sends stream: true.", stream=True)
    assert result.ok


async def test_two_store_false_turns_on_one_socket(ws: Connection, client: openai.OpenAI) -> None:
    first = await turn(ws, input="First turn, not stored.", store=False)
    assert first.response.store is False
    second = await turn(
        ws, input="Second turn, only the new input.", store=False, previous_response_id=first.response.id
    )
    assert second.ok
    assert second.response.previous_response_id == first.response.id
    assert second.response.id != first.response.id
    third = await turn(ws, input="Third.", store=False, previous_response_id=second.response.id)
    assert third.ok
    # zero data retention: none of them reached the durable store
    for result in (first, second, third):
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(result.response.id)


async def test_continuation_with_only_new_input_sees_context(async_client: openai.AsyncOpenAI) -> None:
    async with async_client.responses.connect() as conn:
        first = await turn(conn, input="My favourite colour is teal and my cat is called Miso.", store=False)
        second = await turn(
            conn, input="What is my cat called?", store=False, previous_response_id=first.response.id
        )
    async with async_client.responses.connect() as conn:
        fresh = await turn(conn, input="What is my cat called?", store=False)
    u1, u2, u0 = first.response.usage, second.response.usage, fresh.response.usage
    assert u1 is not None and u2 is not None and u0 is not None
    assert u2.input_tokens > u1.input_tokens
    assert u2.input_tokens >= u1.input_tokens + u1.output_tokens  # previous input + output are in the prompt
    assert u2.input_tokens > u0.input_tokens
    assert u2.input_tokens_details.cached_tokens > 0


async def test_reconnect_store_false_id_not_found_then_fresh_turn(async_client: openai.AsyncOpenAI) -> None:
    async with async_client.responses.connect() as conn:
        first = await turn(conn, input="Ephemeral turn.", store=False)
    async with async_client.responses.connect() as conn:
        missing = await turn(conn, input="continue", store=False, previous_response_id=first.response.id)
        assert_ws_error(missing.error, code="previous_response_not_found")
        assert missing.error.error.param == "previous_response_id"
        # the client recovers by resending the full input without an id, on the same socket
        recovered = await turn(
            conn,
            store=False,
            input=[
                {"role": "user", "content": "Ephemeral turn."},
                *[item.to_dict() for item in first.response.output],
                {"role": "user", "content": "continue"},
            ],
        )
        assert recovered.ok
        assert recovered.response.previous_response_id is None


async def test_random_id_not_found(ws: Connection) -> None:
    missing = await turn(ws, input="hi", previous_response_id=f"resp_{secrets.token_hex(16)}")
    assert_ws_error(missing.error, code="previous_response_not_found")
    await assert_usable(ws)


async def test_unknown_call_id_fails_and_evicts_parent(ws: Connection) -> None:
    parent = await turn(
        ws, input="Weather in Lima for 2 days?", store=False, tools=[WEATHER_TOOL], tool_choice="required"
    )
    call = next(item for item in parent.response.output if isinstance(item, ResponseFunctionToolCall))
    bad = await turn(
        ws,
        store=False,
        tools=[WEATHER_TOOL],
        previous_response_id=parent.response.id,
        input=[{"type": "function_call_output", "call_id": "call_never_issued", "output": "{}"}],
    )
    assert_ws_error(bad.error, status=400)  # refused before response.created: the input cannot continue it
    retry = await turn(
        ws,
        store=False,
        tools=[WEATHER_TOOL],
        previous_response_id=parent.response.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "{}"}],
    )
    assert_ws_error(retry.error, code="previous_response_not_found")
    await assert_usable(ws)


async def test_tool_loop_with_correct_call_id(ws: Connection) -> None:
    parent = await turn(
        ws, input="Weather in Quito?", store=False, tools=[WEATHER_TOOL], tool_choice="required"
    )
    types = collapse([event.type for event in parent.events])
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    call = parent.response.output[0]
    assert isinstance(call, ResponseFunctionToolCall)
    arguments = "".join(e.delta for e in parent.events if e.type == "response.function_call_arguments.delta")
    assert arguments == call.arguments
    assert set(json.loads(arguments)) >= {"city", "days"}
    answer = await turn(
        ws,
        store=False,
        tools=[WEATHER_TOOL],
        previous_response_id=parent.response.id,
        input=[
            {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"temp_c": 18})}
        ],
    )
    assert answer.ok and answer.response.output_text


async def test_compacted_window_starts_new_chain(ws: Connection, async_client: openai.AsyncOpenAI) -> None:
    first = await turn(ws, input="We are designing a bridge.", store=False)
    second = await turn(
        ws, input="It must carry trains.", store=False, previous_response_id=first.response.id
    )
    history = [
        {"role": "user", "content": "We are designing a bridge."},
        *[item.to_dict() for item in first.response.output],
        {"role": "user", "content": "It must carry trains."},
        *[item.to_dict() for item in second.response.output],
    ]
    compacted = await async_client.responses.compact(model=MODEL, input=history)  # type: ignore[arg-type]
    assert compacted.object == "response.compaction"
    assert compacted.output[-1].type == "compaction"
    window = [item.to_dict(warnings=False) for item in compacted.output]
    fresh = await turn(ws, store=False, input=[*window, {"role": "user", "content": "What material?"}])
    assert fresh.ok
    assert fresh.response.previous_response_id is None
    follow = await turn(ws, store=False, input="And the span?", previous_response_id=fresh.response.id)
    assert follow.ok and follow.response.previous_response_id == fresh.response.id


async def test_store_true_chain_continues_on_new_socket(
    async_client: openai.AsyncOpenAI, client: openai.OpenAI
) -> None:
    async with async_client.responses.connect() as conn:
        first = await turn(conn, input="Stored turn on socket one.", store=True)
    # commit before announce: the id is retrievable the moment response.completed arrived
    assert client.responses.retrieve(first.response.id).status == "completed"
    async with async_client.responses.connect() as conn:
        second = await turn(conn, input="Continued on socket two.", previous_response_id=first.response.id)
        assert second.ok
        assert second.response.previous_response_id == first.response.id
        u1, u2 = first.response.usage, second.response.usage
        assert u1 is not None and u2 is not None and u2.input_tokens > u1.input_tokens
        third = await turn(conn, input="And a third.", previous_response_id=second.response.id)
        assert third.ok
    # and over HTTP
    http = client.responses.create(
        model=MODEL, input="Over HTTP now.", previous_response_id=third.response.id
    )
    assert http.status == "completed"


async def test_stored_turn_on_unstored_parent_continues_on_new_socket(
    async_client: openai.AsyncOpenAI, client: openai.OpenAI
) -> None:
    """A store=true response is a stored id even when its parent was store=false on the socket: once
    response.completed arrives it is retrievable, listable, and continuable on a new socket (PROTOCOL §5)."""
    async with async_client.responses.connect() as conn:
        ephemeral = await turn(conn, input="An unstored first turn.", store=False)
        stored = await turn(
            conn, input="A stored second turn.", store=True, previous_response_id=ephemeral.response.id
        )
    assert stored.ok and stored.response.store is True
    assert client.responses.retrieve(stored.response.id).status == "completed"
    items = client.responses.input_items.list(stored.response.id, order="asc").data
    assert [item.role for item in items] == ["user", "assistant", "user"]
    async with async_client.responses.connect() as conn:
        resumed = await turn(conn, input="Continue on a new socket.", previous_response_id=stored.response.id)
        assert resumed.ok, resumed.terminal
        assert resumed.response.usage and stored.response.usage
        assert resumed.response.usage.input_tokens > stored.response.usage.input_tokens


async def test_http_stored_response_continues_over_websocket(ws: Connection, client: openai.OpenAI) -> None:
    created = client.responses.create(model=MODEL, input="Started over HTTP.")
    cont = await turn(ws, input="Continued over WebSocket.", previous_response_id=created.id)
    assert cont.ok and cont.response.previous_response_id == created.id
    again = await turn(
        ws, input="And again, from the socket cache.", store=False, previous_response_id=cont.response.id
    )
    assert again.ok


async def test_incomplete_turn_is_typed(ws: Connection) -> None:
    result = await turn(ws, input="Say a lot.", max_output_tokens=3, store=False)
    assert result.terminal.type == "response.incomplete"
    assert result.terminal.response.status == "incomplete"
    assert result.terminal.response.incomplete_details.reason == "max_output_tokens"
    # an incomplete response is still a parent the lane can continue from
    follow = await turn(ws, input="Go on.", store=False, previous_response_id=result.terminal.response.id)
    assert follow.ok


async def test_every_event_of_every_turn_is_typed(ws: Connection) -> None:
    """Text, tool call, warmup, continuation and error turns; `recv` already checks each event."""
    seen: set[str] = set()
    warm = await turn(ws, generate=False, input="warm", tools=[WEATHER_TOOL], instructions="Be brief.")
    text = await turn(
        ws,
        input="text",
        tools=[WEATHER_TOOL],
        instructions="Be brief.",
        previous_response_id=warm.response.id,
    )
    tool = await turn(
        ws, input="tool", tools=[WEATHER_TOOL], tool_choice="required", previous_response_id=text.response.id
    )
    error = await turn(ws, input="x", previous_response_id="resp_does_not_exist")
    for result in (warm, text, tool, error):
        seen.update(event.type for event in result.events)
    assert {
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.completed",
        "error",
    } <= seen


# -- lanes -----------------------------------------------------------------------------------------------


async def collect_lanes(
    conn: Connection, expected: dict[str | None, int]
) -> tuple[list[Any], dict[Any, list[Any]]]:
    """Receive until each lane has seen `expected[lane]` terminal events; returns all events in arrival order
    and the events of each lane."""
    remaining = dict(expected)
    arrival: list[Any] = []
    lanes: dict[Any, list[Any]] = {lane: [] for lane in expected}
    while any(remaining.values()):
        event = await recv(conn)
        lane = getattr(event, "stream_id", None)
        assert lane in lanes, f"event for an unexpected lane {lane!r}: {event}"
        arrival.append(event)
        lanes[lane].append(event)
        if event.type in TERMINAL:
            remaining[lane] -= 1
            assert remaining[lane] >= 0, f"more terminal events than expected on lane {lane!r}"
    return arrival, lanes


def split_responses(events: list[Any]) -> list[list[Any]]:
    """Split one lane's events into consecutive turns at each terminal event."""
    turns: list[list[Any]] = [[]]
    for event in events:
        turns[-1].append(event)
        if event.type in TERMINAL:
            turns.append([])
    return [t for t in turns if t]


async def test_lanes_run_concurrently_and_echo_stream_id(ws: Connection) -> None:
    await ws.response.create(
        model=MODEL, input="Lane A, tell me a long story.", store=False, stream_id="lane-a"
    )
    await ws.response.create(model=MODEL, input="Lane B, tell me another.", store=False, stream_id="lane_b.2")
    arrival, lanes = await collect_lanes(ws, {"lane-a": 1, "lane_b.2": 1})
    for lane, events in lanes.items():
        assert all(event.stream_id == lane for event in events)
        assert [event.sequence_number for event in events] == list(range(len(events)))
        assert collapse([event.type for event in events]) == expected_text_types()
    ids = {lanes[lane][-1].response.id for lane in lanes}
    assert len(ids) == 2
    # whether they interleaved depends on scheduling; both completing without waiting is what is required
    assert len(arrival) == sum(len(events) for events in lanes.values())


async def test_fork_from_another_lane(ws: Connection) -> None:
    base = await turn(ws, input="The shared parent.", store=False, stream_id="a")
    fork = await turn(
        ws, input="Fork on lane b.", store=False, stream_id="b", previous_response_id=base.response.id
    )
    assert fork.ok and fork.response.previous_response_id == base.response.id
    # lane a still owns its latest response and can continue from it
    cont = await turn(
        ws, input="Lane a continues.", store=False, stream_id="a", previous_response_id=base.response.id
    )
    assert cont.ok
    # and lane b continues from its own latest
    cont_b = await turn(
        ws, input="Lane b continues.", store=False, stream_id="b", previous_response_id=fork.response.id
    )
    assert cont_b.ok
    assert cont_b.response.usage and fork.response.usage
    assert cont_b.response.usage.input_tokens > fork.response.usage.input_tokens


async def test_older_id_of_same_lane_is_a_miss(ws: Connection) -> None:
    first = await turn(ws, input="one", store=False, stream_id="solo")
    second = await turn(
        ws, input="two", store=False, stream_id="solo", previous_response_id=first.response.id
    )
    assert second.ok
    stale = await turn(
        ws, input="three", store=False, stream_id="solo", previous_response_id=first.response.id
    )
    assert_ws_error(stale.error, code="previous_response_not_found", stream_id="solo")


async def test_failed_fork_keeps_parent(ws: Connection) -> None:
    parent = await turn(
        ws,
        input="Weather in Porto?",
        store=False,
        stream_id="a",
        tools=[WEATHER_TOOL],
        tool_choice="required",
    )
    call = next(item for item in parent.response.output if isinstance(item, ResponseFunctionToolCall))
    bad = await turn(
        ws,
        store=False,
        stream_id="b",
        tools=[WEATHER_TOOL],
        previous_response_id=parent.response.id,
        input=[{"type": "function_call_output", "call_id": "call_bogus", "output": "{}"}],
    )
    assert_ws_error(bad.error, status=400, stream_id="b")
    good = await turn(
        ws,
        store=False,
        stream_id="a",
        tools=[WEATHER_TOOL],
        previous_response_id=parent.response.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )
    assert good.ok


@pytest.mark.parametrize("stream_id", [None, "fifo"])
async def test_same_lane_is_fifo(ws: Connection, stream_id: str | None) -> None:
    lane = {"stream_id": stream_id} if stream_id else {}
    await ws.response.create(model=MODEL, input="first in line", store=False, **lane)
    await ws.response.create(model=MODEL, input="second in line", store=False, **lane)
    await ws.response.create(model=MODEL, input="third in line", store=False, **lane)
    _, lanes = await collect_lanes(ws, {stream_id: 3})
    turns = split_responses(lanes[stream_id])
    assert len(turns) == 3
    for events in turns:
        assert events[-1].type == "response.completed", f"queued create was not served: {events[-1]}"
        assert events[0].type == "response.created"
        assert [event.sequence_number for event in events] == list(range(len(events)))
        assert events[0].response.id == events[-1].response.id, "another response's events came in between"
    assert len({events[-1].response.id for events in turns}) == 3


async def test_warmup_generate_false(ws: Connection) -> None:
    warm = await turn(
        ws,
        generate=False,
        input="Prepare the session.",
        instructions="Be brief.",
        tools=[WEATHER_TOOL],
        store=False,
    )
    assert [event.type for event in warm.events] == ["response.created", "response.completed"]
    assert [event.sequence_number for event in warm.events] == [0, 1]
    assert warm.response.output == []
    assert warm.response.status == "completed"
    chained = await turn(
        ws,
        input="Now answer.",
        instructions="Be brief.",
        tools=[WEATHER_TOOL],
        store=False,
        previous_response_id=warm.response.id,
    )
    assert chained.ok and chained.response.output_text
    assert chained.response.previous_response_id == warm.response.id
    assert chained.response.usage and chained.response.usage.input_tokens_details.cached_tokens > 0


async def test_named_lane_limit(ws: Connection) -> None:
    lanes = [f"lane-{index}" for index in range(32)]
    for lane in lanes:
        await ws.response.create(model=MODEL, input="warm", generate=False, store=False, stream_id=lane)
    _, events = await collect_lanes(ws, dict.fromkeys(lanes, 1))
    assert all(evs[-1].type == "response.completed" for evs in events.values())
    over = await turn(ws, input="one lane too many", store=False, stream_id="lane-32")
    assert_ws_error(over.error, code="websocket_stream_limit_reached", stream_id="lane-32")
    # existing lanes and the default lane keep working
    await assert_usable(ws, stream_id="lane-0")
    await assert_usable(ws)


# -- client events that are not a valid create -------------------------------------------------------------


async def test_unknown_client_event_type(ws: Connection) -> None:
    await ws.send({"type": "response.bogus", "foo": 1})  # type: ignore[arg-type]
    error = await recv(ws)
    assert_ws_error(error, status=400)
    # an error for a frame that named a lane goes to that lane
    await ws.send({"type": "response.bogus", "stream_id": "side"})  # type: ignore[arg-type]
    error = await recv(ws)
    assert_ws_error(error, status=400, stream_id="side")
    await assert_usable(ws)


async def test_malformed_json_frame(ws: Connection) -> None:
    await ws.send_raw('{"type": "response.create", "model": ')
    error = await recv(ws)
    assert_ws_error(error, status=400)
    await ws.send_raw("not json at all")
    error = await recv(ws)
    assert_ws_error(error, status=400)
    await assert_usable(ws)


async def test_frame_without_type(ws: Connection) -> None:
    await ws.send_raw(json.dumps({"model": MODEL, "input": "no type"}))
    error = await recv(ws)
    assert_ws_error(error, status=400)
    await ws.send_raw(json.dumps(["an", "array"]))
    error = await recv(ws)
    assert_ws_error(error, status=400)
    await assert_usable(ws)


async def test_response_processed_is_accepted_silently(ws: Connection) -> None:
    first = await turn(ws, input="hello", store=False)
    await ws.send({"type": "response.processed", "response_id": first.response.id})  # type: ignore[arg-type]
    # nothing comes back for it: the next event on the socket belongs to the next turn
    after = await assert_usable(ws)
    assert after.events[0].type == "response.created"


async def test_background_rejected(ws: Connection) -> None:
    result = await turn(ws, input="run in the background", background=True)
    assert_ws_error(result.error, status=400)
    assert result.error.error.param == "background"
    await assert_usable(ws)


async def test_invalid_stream_id(ws: Connection) -> None:
    await ws.response.create(model=MODEL, input="bad lane", stream_id="bad id!")
    error = await recv(ws)
    assert_ws_error(error, code="invalid_stream_id", stream_id=_ANY)
    await ws.response.create(model=MODEL, input="empty lane", stream_id="")
    error = await recv(ws)
    assert_ws_error(error, code="invalid_stream_id", stream_id=_ANY)
    await ws.response.create(model=MODEL, input="long lane", stream_id="x" * 257)
    error = await recv(ws)
    assert_ws_error(error, code="invalid_stream_id", stream_id=_ANY)
    await assert_usable(ws)
    await assert_usable(ws, stream_id="x" * 256)


async def test_invalid_create_fields_give_error_event(ws: Connection) -> None:
    await ws.send({"type": "response.create", "model": MODEL, "input": 42})  # type: ignore[arg-type]
    error = await recv(ws)
    assert_ws_error(error, status=400)
    result = await turn(ws, input="x", temperature=9.0)
    assert_ws_error(result.error, status=400)
    assert result.error.error.param == "temperature"
    await ws.send(
        {"type": "response.create", "model": MODEL, "input": "x", "stream_id": "lane-x", "temperature": 9.0}
    )  # type: ignore[arg-type]
    error = await recv(ws)
    assert_ws_error(error, status=400, stream_id="lane-x")
    await assert_usable(ws)


async def test_unknown_extra_fields_ignored(ws: Connection) -> None:
    await ws.send(
        {
            "type": "response.create",
            "model": MODEL,
            "input": "hi",
            "x_unknown": {"a": [1]},
            "prompt_cache_retention": "24h",
        }
    )  # type: ignore[arg-type]
    result = await collect(ws)
    assert result.ok


# -- scheduling, observed on a server whose model takes a while to answer ------------------------------------


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose sim model waits SLOW_TTFT_MS before its first token: long enough that two lanes
    running concurrently must overlap, and two turns of one lane running at once would show."""
    directory = tmp_path_factory.mktemp("loopwire-slow")
    proc = ServerProcess("memory", directory / "server.log", ("--sim-ttft-ms", str(SLOW_TTFT_MS))).start()
    try:
        yield proc
    finally:
        proc.stop()


async def test_lanes_overlap_when_the_model_is_slow(slow_server: ServerProcess) -> None:
    sdk = make_async_client(slow_server.base_url)
    try:
        async with sdk.responses.connect() as conn:
            await conn.response.create(model=MODEL, input="slow lane a", store=False, stream_id="a")
            await conn.response.create(model=MODEL, input="slow lane b", store=False, stream_id="b")
            arrival, lanes = await collect_lanes(conn, {"a": 1, "b": 1})
    finally:
        await sdk.close()
    for events in lanes.values():
        assert events[-1].type == "response.completed", events[-1]
        assert [event.sequence_number for event in events] == list(range(len(events)))
    kinds = [(event.stream_id, event.type) for event in arrival]
    # b was sent right behind a, and a cannot finish before its first token: b must have started meanwhile
    first_completed = min(kinds.index((lane, "response.completed")) for lane in ("a", "b"))
    assert kinds.index(("a", "response.created")) < first_completed
    assert kinds.index(("b", "response.created")) < first_completed, kinds


async def test_same_lane_never_overlaps_when_the_model_is_slow(slow_server: ServerProcess) -> None:
    sdk = make_async_client(slow_server.base_url)
    try:
        async with sdk.responses.connect() as conn:
            await conn.response.create(model=MODEL, input="first", store=False, stream_id="q")
            await conn.response.create(model=MODEL, input="second", store=False, stream_id="q")
            _, lanes = await collect_lanes(conn, {"q": 2})
    finally:
        await sdk.close()
    turns = split_responses(lanes["q"])
    assert [len(t) > 1 and t[-1].type for t in turns] == ["response.completed", "response.completed"]
    for events in turns:
        assert events[0].type == "response.created"
        assert events[0].response.id == events[-1].response.id
        assert [event.sequence_number for event in events] == list(range(len(events)))


async def test_client_disconnect_mid_turn_leaves_server_healthy(slow_server: ServerProcess) -> None:
    sdk = make_async_client(slow_server.base_url)
    try:
        # max_queue=None: an unread backlog must not stall the client's own close handshake (websockets
        # pauses reading past max_queue, which would hide the server's close frame for close_timeout seconds)
        async with sdk.responses.connect(websocket_connection_options={"max_queue": None}) as conn:
            for index in range(4):
                await conn.response.create(
                    model=MODEL, input=f"abandoned {index}", store=False, stream_id=f"gone-{index}"
                )
            await conn.response.create(
                model=MODEL, input="queued behind gone-0", store=False, stream_id="gone-0"
            )
            first = await recv(conn)  # the turns are running (the model is still thinking) when we leave
            assert first.type == "response.created"
        # the socket closed with turns running and queued; the server keeps serving
        assert slow_server.alive(), slow_server.log_text()
        async with sdk.responses.connect() as conn:
            await assert_usable(conn)
    finally:
        await sdk.close()
    assert "Traceback" not in slow_server.log_text(), slow_server.log_text()


# -- durability across a restart ---------------------------------------------------------------------------


async def test_sqlite_chain_survives_restart(
    server_factory: Callable[[Path], ServerProcess], tmp_path: Path
) -> None:
    db = tmp_path / "restart.db"
    first_server = server_factory(db)
    sdk = make_async_client(first_server.base_url)
    try:
        async with sdk.responses.connect() as conn:
            first = await turn(conn, input="Remember: the launch code is 0000.", store=True)
            second = await turn(
                conn, input="And the backup is 1111.", store=True, previous_response_id=first.response.id
            )
    finally:
        await sdk.close()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: -SIGTERM is a clean exit too
    assert first_server.stop() in (0, -signal.SIGTERM), first_server.log_text()

    second_server = server_factory(db)
    sdk = make_async_client(second_server.base_url)
    try:
        async with sdk.responses.connect() as conn:
            resumed = await turn(conn, input="What were the codes?", previous_response_id=second.response.id)
            assert resumed.ok, resumed.terminal
            assert resumed.response.previous_response_id == second.response.id
            assert resumed.response.usage and second.response.usage
            assert resumed.response.usage.input_tokens > second.response.usage.input_tokens
    finally:
        await sdk.close()
    with make_client(second_server.base_url) as http:
        fetched = http.responses.retrieve(second.response.id)
        assert fetched.status == "completed"
        assert fetched.output_text == second.response.output_text
        assert http.responses.retrieve(first.response.id).id == first.response.id
        over_http = http.responses.create(
            model=MODEL, input="Over HTTP after the restart.", previous_response_id=second.response.id
        )
        assert over_http.status == "completed"
        items = http.responses.input_items.list(second.response.id, order="asc").data
        assert [item.role for item in items] == ["user", "assistant", "user"]
