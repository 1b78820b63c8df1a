"""Edge tests of the core: lanes and limits, the connection cache, planning, turns and compaction.

Every limit is tested at its value (passes) and one past it (fails); real objects only, no I/O, no clock.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from loopwire.core.cache import CachedResponse, missing_call_ids
from loopwire.core.compact import compact_context
from loopwire.core.connection import DEFAULT_LANE, ConnectionState, validate_stream_id
from loopwire.core.limits import Limits
from loopwire.core.plan import plan_turn, validate_fields
from loopwire.core.turn import Turn
from loopwire.engines.base import (
    Finished,
    NamedToolChoice,
    RenderState,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallStart,
    Usage,
)
from loopwire.protocol.compaction import decode_summary
from loopwire.protocol.context import EMPTY_CONTEXT, Context
from loopwire.protocol.errors import ProtocolError
from loopwire.protocol.events import encode, event_type
from loopwire.protocol.items import (
    Compaction,
    FunctionCall,
    FunctionCallOutput,
    InputItem,
    ItemReference,
    Message,
    OutputText,
)
from loopwire.protocol.request import CompactRequest, CreateRequest, decode_http_create
from loopwire.protocol.response import Response

LIMITS = Limits()


def conn(limits: Limits = LIMITS, *, owner: str = "alice", opened_at: float = 1000.0) -> ConnectionState[str]:
    return ConnectionState(limits, opened_at=opened_at, owner=owner)


def cached(
    rid: str,
    lane: str = DEFAULT_LANE,
    *,
    owner: str = "alice",
    context: Context = EMPTY_CONTEXT,
    render: RenderState | None = None,
) -> CachedResponse:
    return CachedResponse(rid, owner, lane, context, render, stored=False)


def user(text: str, *, id: str | None = None) -> Message:
    return Message(role="user", content=text, id=id)


def request(**fields: Any) -> CreateRequest:
    fields.setdefault("model", "m")
    return CreateRequest(**fields)


def plan(req: CreateRequest, parent: CachedResponse | None = None, lane: str = DEFAULT_LANE):  # type: ignore[no-untyped-def]
    return plan_turn(req, parent=parent, lane=lane, owner="alice", response_id="resp_new", now=1_700_000_000)


def protocol_error(fn, *args: Any, **kwargs: Any) -> ProtocolError:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError) as info:
        fn(*args, **kwargs)
    return info.value


# -- scheduling: in-flight, lanes, queue --------------------------------------------------------------


def test_default_limits_match_the_protocol() -> None:
    assert LIMITS.max_in_flight == 16
    assert LIMITS.max_named_lanes == 32
    assert LIMITS.max_stream_id_length == 256
    assert LIMITS.max_connection_age_s == 3600.0
    assert (LIMITS.max_metadata_pairs, LIMITS.max_metadata_key_length, LIMITS.max_metadata_value_length) == (
        16,
        64,
        512,
    )


def test_max_in_flight_at_limit_runs_one_past_is_queued_then_starts() -> None:
    state = conn()
    for i in range(16):
        assert state.submit(f"l{i}", f"job{i}") == [(f"l{i}", f"job{i}")]
    assert state.in_flight == 16
    assert state.submit("l16", "job16") == []  # queued, not rejected
    assert state.queued == 1
    assert state.in_flight == 16
    assert state.finish("l3") == [("l16", "job16")]
    assert state.in_flight == 16
    assert state.queued == 0


def test_in_flight_cap_counts_the_default_lane_too() -> None:
    state = conn()
    assert state.submit(DEFAULT_LANE, "d") == [(DEFAULT_LANE, "d")]
    for i in range(15):
        assert state.submit(f"l{i}", f"j{i}") != []
    assert state.submit("late", "x") == []
    assert state.finish(DEFAULT_LANE) == [("late", "x")]


def test_max_named_lanes_at_limit_ok_one_past_fails() -> None:
    state = conn()
    for i in range(32):
        state.submit(f"lane{i}", f"j{i}")
    assert state.lane_count == 32
    error = protocol_error(state.submit, "lane32", "over")
    assert error.code == "websocket_stream_limit_reached"
    assert error.status == 400
    assert error.param == "stream_id"
    # The default lane does not count against the named-lane limit.
    state.submit(DEFAULT_LANE, "default")
    assert state.lane_count == 33
    # Reusing an existing named lane is always fine.
    state.submit("lane0", "again")


def test_default_lane_first_then_32_named_lanes() -> None:
    state = conn()
    state.submit(DEFAULT_LANE, "d")
    for i in range(32):
        state.submit(f"lane{i}", f"j{i}")
    assert protocol_error(state.submit, "lane32", "x").code == "websocket_stream_limit_reached"


def test_max_queued_at_limit_ok_one_past_fails() -> None:
    state = conn()
    assert state.submit("a", "running") == [("a", "running")]
    for i in range(256):
        assert state.submit("a", f"w{i}") == []
    assert state.queued == 256
    error = protocol_error(state.submit, "a", "too-many")
    assert error.status == 429
    assert error.code == "too_many_queued_responses"
    assert state.queued == 256


def test_refused_submit_on_a_new_lane_does_not_consume_a_lane() -> None:
    state = conn(Limits(max_queued=1))
    state.submit("a", "running")
    state.submit("a", "waiting")
    lanes = state.lane_count
    assert protocol_error(state.submit, "brand-new", "x").code == "too_many_queued_responses"
    assert state.lane_count == lanes


def test_same_lane_is_fifo_and_never_overlaps() -> None:
    state = conn()
    assert state.submit("a", "a1") == [("a", "a1")]
    assert state.submit("a", "a2") == []
    assert state.submit("b", "b1") == [("b", "b1")]
    assert state.submit("a", "a3") == []
    assert state.in_flight == 2
    assert state.finish("a") == [("a", "a2")]
    assert state.finish("b") == []
    assert state.finish("a") == [("a", "a3")]
    assert state.finish("a") == []
    assert state.in_flight == 0 and state.queued == 0


def test_fifo_on_the_default_lane() -> None:
    state = conn()
    started = [job for _, job in state.submit(DEFAULT_LANE, "1")]
    for job in ("2", "3", "4"):
        started += [j for _, j in state.submit(DEFAULT_LANE, job)]
    while len(started) < 4:
        started += [j for _, j in state.finish(DEFAULT_LANE)]
    assert started == ["1", "2", "3", "4"]


def test_finish_of_an_idle_lane_changes_nothing() -> None:
    state = conn()
    assert state.finish("never-used") == []
    state.submit("a", "x")
    state.finish("a")
    assert state.finish("a") == []
    assert state.in_flight == 0


# -- stream_id validation -----------------------------------------------------------------------------


def test_stream_id_length_256_ok_257_invalid() -> None:
    state = conn()
    state.submit("a" * 256, "ok")
    error = protocol_error(state.submit, "a" * 257, "bad")
    assert error.code == "invalid_stream_id"
    assert error.param == "stream_id"
    assert error.status == 400


@pytest.mark.parametrize("stream_id", ["has space", "slash/y", "ünï", "a:b", "tab\t", "new\nline", "a*"])
def test_stream_id_bad_characters_invalid(stream_id: str) -> None:
    assert protocol_error(conn().submit, stream_id, "x").code == "invalid_stream_id"


@pytest.mark.parametrize("stream_id", ["a", "A-z_0.9", "...", "-", "lane.with-all_Chars09"])
def test_stream_id_allowed_characters(stream_id: str) -> None:
    validate_stream_id(stream_id, LIMITS)


def test_empty_stream_id_is_invalid_when_validated() -> None:
    assert protocol_error(validate_stream_id, "", LIMITS).code == "invalid_stream_id"


def test_invalid_stream_id_creates_no_lane() -> None:
    state = conn()
    protocol_error(state.submit, "bad id", "x")
    assert state.lane_count == 0 and state.queued == 0 and state.in_flight == 0


# -- connection age -----------------------------------------------------------------------------------


def test_check_age_just_below_limit_ok_at_and_after_fail() -> None:
    state = conn(opened_at=1000.0)
    assert state.check_age(1000.0) is None
    assert state.check_age(1000.0 + 3600.0 - 0.001) is None
    for now in (1000.0 + 3600.0, 1000.0 + 3600.0 + 0.001, 1000.0 + 7200.0):
        error = state.check_age(now)
        assert error is not None
        assert error.code == "websocket_connection_limit_reached"


def test_check_age_follows_configured_limit() -> None:
    state = conn(Limits(max_connection_age_s=5.0), opened_at=0.0)
    assert state.check_age(4.999) is None
    assert state.check_age(5.0) is not None


# -- the connection-local cache -----------------------------------------------------------------------


def test_lookup_latest_per_lane_and_older_id_is_a_miss() -> None:
    state = conn()
    first = cached("resp_1")
    state.commit(first)
    assert state.lookup("resp_1") is first
    second = cached("resp_2")
    state.commit(second)
    assert state.lookup("resp_2") is second
    assert state.lookup("resp_1") is None
    assert state.cached_count == 1


def test_lanes_keep_their_own_latest() -> None:
    state = conn()
    a, b = cached("resp_a", "a"), cached("resp_b", "b")
    state.commit(a)
    state.commit(b)
    assert state.lookup("resp_a") is a and state.lookup("resp_b") is b
    state.commit(cached("resp_a2", "a"))
    assert state.lookup("resp_a") is None
    assert state.lookup("resp_b") is b
    assert state.lookup("unknown") is None


def test_evict_after_failure_on_own_lane_evicts_parent() -> None:
    state = conn()
    state.commit(cached("resp_p", "a"))
    state.evict_after_failure("resp_p", "a")
    assert state.lookup("resp_p") is None


def test_evict_after_failure_of_a_fork_keeps_the_parent() -> None:
    state = conn()
    parent = cached("resp_p", "a")
    state.commit(parent)
    state.evict_after_failure("resp_p", "b")
    assert state.lookup("resp_p") is parent
    # and the parent's own lane can still evict it
    state.evict_after_failure("resp_p", "a")
    assert state.lookup("resp_p") is None


def test_evict_after_failure_without_parent_or_unknown_parent_is_harmless() -> None:
    state = conn()
    keep = cached("resp_k")
    state.commit(keep)
    state.evict_after_failure(None, DEFAULT_LANE)
    state.evict_after_failure("resp_unknown", DEFAULT_LANE)
    assert state.lookup("resp_k") is keep


def test_evicted_lane_accepts_a_new_commit() -> None:
    state = conn()
    state.commit(cached("resp_1"))
    state.evict("resp_1")
    fresh = cached("resp_2")
    state.commit(fresh)
    assert state.lookup("resp_2") is fresh
    assert state.cached_count == 1


def test_lookup_is_owner_isolated() -> None:
    state = conn(owner="alice")
    state.commit(cached("resp_bob", owner="bob"))
    assert state.lookup("resp_bob") is None
    mine = cached("resp_alice", "x", owner="alice")
    state.commit(mine)
    assert state.lookup("resp_alice") is mine


def test_clear_forgets_everything() -> None:
    state = conn()
    state.submit("a", "j")
    state.commit(cached("resp_1", "a"))
    state.clear()
    assert state.lookup("resp_1") is None
    assert (state.lane_count, state.queued, state.in_flight, state.cached_count) == (0, 0, 0, 0)


# -- validate_fields ----------------------------------------------------------------------------------


def _validate(**fields: Any) -> None:
    validate_fields(request(**fields), LIMITS, websocket=True)


def test_metadata_pairs_16_ok_17_fail() -> None:
    _validate(metadata={f"k{i}": "v" for i in range(16)})
    error = protocol_error(_validate, metadata={f"k{i}": "v" for i in range(17)})
    assert error.param == "metadata"
    assert error.status == 400


def test_metadata_key_64_ok_65_fail() -> None:
    _validate(metadata={"k" * 64: "v"})
    assert protocol_error(_validate, metadata={"k" * 65: "v"}).param == "metadata"


def test_metadata_value_512_ok_513_fail() -> None:
    _validate(metadata={"k": "v" * 512})
    error = protocol_error(_validate, metadata={"k": "v" * 513})
    assert error.param is not None and error.param.startswith("metadata")


@pytest.mark.parametrize("value", [0.0, 1.0, 2.0])
def test_temperature_in_bounds(value: float) -> None:
    _validate(temperature=value)


@pytest.mark.parametrize("value", [-0.0001, 2.0001, 5.0])
def test_temperature_out_of_bounds(value: float) -> None:
    assert protocol_error(_validate, temperature=value).param == "temperature"


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_top_p_in_bounds(value: float) -> None:
    _validate(top_p=value)


@pytest.mark.parametrize("value", [-0.0001, 1.0001])
def test_top_p_out_of_bounds(value: float) -> None:
    assert protocol_error(_validate, top_p=value).param == "top_p"


def test_max_input_items_at_limit_ok_one_past_fails() -> None:
    items: list[InputItem] = [user("x") for _ in range(LIMITS.max_input_items)]
    _validate(input=items)
    error = protocol_error(_validate, input=[*items, user("one more")])
    assert error.param == "input"
    assert error.code == "array_above_max_length"


def test_max_input_items_configured_small() -> None:
    limits = Limits(max_input_items=2)
    validate_fields(request(input=[user("a"), user("b")]), limits, websocket=False)
    with pytest.raises(ProtocolError):
        validate_fields(request(input=[user("a"), user("b"), user("c")]), limits, websocket=False)


def test_missing_model_and_background() -> None:
    assert protocol_error(validate_fields, CreateRequest(), LIMITS, websocket=True).code == (
        "missing_required_parameter"
    )
    error = protocol_error(_validate, background=True)
    assert error.param == "background"


# -- plan_turn ----------------------------------------------------------------------------------------


def _parent_with_call(
    call_id: str = "call_1", *, render: RenderState | None = None, lane: str = DEFAULT_LANE
) -> CachedResponse:
    context = EMPTY_CONTEXT.extend([user("weather?", id="msg_u1")]).extend(
        [FunctionCall(call_id=call_id, name="get_weather", arguments="{}", id="fc_1", status="completed")]
    )
    return cached("resp_parent", lane, context=context, render=render)


def test_function_call_output_answering_the_parent_passes() -> None:
    parent = _parent_with_call()
    result = plan(
        request(
            input=[FunctionCallOutput(call_id="call_1", output="sunny")], previous_response_id="resp_parent"
        ),
        parent,
    )
    assert len(result.context) == 3
    assert isinstance(result.new_items[0], FunctionCallOutput)
    assert result.parent is parent
    assert result.response.previous_response_id == "resp_parent"


def test_function_call_output_unknown_call_id_fails() -> None:
    parent = _parent_with_call()
    error = protocol_error(
        plan, request(input=[user("hi"), FunctionCallOutput(call_id="call_nope", output="x")]), parent
    )
    assert error.code == "invalid_function_call_output"
    assert error.param == "input[1].call_id"
    assert error.status == 400


def test_unknown_call_id_reports_the_first_offending_index() -> None:
    error = protocol_error(
        plan,
        request(
            input=[
                FunctionCallOutput(call_id="call_1", output="ok"),
                FunctionCallOutput(call_id="call_x", output="x"),
                FunctionCallOutput(call_id="call_y", output="y"),
            ]
        ),
        _parent_with_call(),
    )
    assert error.param == "input[1].call_id"


def test_function_call_output_without_parent_fails() -> None:
    error = protocol_error(plan, request(input=[FunctionCallOutput(call_id="call_1", output="x")]))
    assert error.code == "invalid_function_call_output"
    assert error.param == "input[0].call_id"


def test_function_call_and_its_output_in_the_same_input_pass() -> None:
    result = plan(
        request(
            input=[
                user("hi"),
                FunctionCall(call_id="call_9", name="f", arguments="{}"),
                FunctionCallOutput(call_id="call_9", output="done"),
            ]
        )
    )
    assert len(result.context) == 3


def test_function_call_output_before_its_call_fails() -> None:
    error = protocol_error(
        plan,
        request(
            input=[
                FunctionCallOutput(call_id="call_9", output="done"),
                FunctionCall(call_id="call_9", name="f", arguments="{}"),
            ]
        ),
    )
    assert error.param == "input[0].call_id"


def test_call_id_in_an_older_segment_is_found() -> None:
    context = (
        EMPTY_CONTEXT.extend([FunctionCall(call_id="call_old", name="f", arguments="{}", id="fc_o")])
        .extend([user("a")])
        .extend([user("b")])
    )
    assert missing_call_ids(context, ["call_old", "call_new"]) == {"call_new"}
    answer = request(input=[FunctionCallOutput(call_id="call_old", output="x")])
    plan(answer, cached("resp_p", context=context))


def test_item_reference_resolves_to_the_referenced_item() -> None:
    parent = _parent_with_call()
    items: list[InputItem] = [ItemReference(id="msg_u1"), FunctionCallOutput(call_id="call_1", output="x")]
    result = plan(request(input=items), parent)
    referenced = result.new_items[0]
    assert isinstance(referenced, Message)
    assert referenced.id == "msg_u1" and referenced.content == "weather?"


def test_item_reference_unknown_fails() -> None:
    error = protocol_error(
        plan, request(input=[user("a"), ItemReference(id="msg_missing")]), _parent_with_call()
    )
    assert error.status == 400
    assert error.param == "input[1].id"
    assert "msg_missing" in error.message


def test_ids_are_assigned_to_items_without_ids_and_kept_otherwise() -> None:
    result = plan(
        request(
            input=[
                user("a"),
                user("b", id="msg_mine"),
                FunctionCall(call_id="call_1", name="f", arguments="{}"),
                FunctionCallOutput(call_id="call_1", output="x"),
            ]
        )
    )
    got = [item.id for item in result.new_items if not isinstance(item, ItemReference)]
    assert all(isinstance(i, str) and i for i in got)
    assert got[0] is not None and got[0].startswith("msg_")
    assert got[1] == "msg_mine"
    assert got[2] is not None and got[2].startswith("fc_")
    assert got[3] is not None and got[3] != got[2]
    assert len(set(got)) == 4


def test_string_input_becomes_one_user_message_with_an_id() -> None:
    result = plan(request(input="hello"))
    (item,) = result.new_items
    assert isinstance(item, Message) and item.role == "user" and item.content == "hello"
    assert item.id is not None and item.id.startswith("msg_")


def test_tool_choice_named_tool_not_in_tools_fails() -> None:
    tools = decode_http_create(
        json.dumps(
            {"model": "m", "tools": [{"type": "function", "name": "known", "parameters": {"type": "object"}}]}
        ).encode()
    ).tools
    error = protocol_error(plan, request(tools=tools, tool_choice={"type": "function", "name": "other"}))
    assert error.param == "tool_choice"
    ok = plan(request(tools=tools, tool_choice={"type": "function", "name": "known"}))
    assert ok.engine_request.tool_choice == NamedToolChoice("known")
    assert ok.response.tool_choice == {"type": "function", "name": "known"}


def test_tool_choice_named_without_tools_fails() -> None:
    assert protocol_error(plan, request(tool_choice={"type": "function", "name": "f"})).param == "tool_choice"


def test_instructions_are_not_inherited() -> None:
    parent = _parent_with_call()
    first = plan(request(input="a", instructions="be terse"))
    assert first.engine_request.instructions == "be terse"
    follow = plan(
        request(input=[FunctionCallOutput(call_id="call_1", output="x")], previous_response_id="resp_parent"),
        parent,
    )
    assert follow.engine_request.instructions is None
    assert follow.response.instructions is None
    answer = [FunctionCallOutput(call_id="call_1", output="x")]
    other = plan(request(input=answer, instructions="new"), parent)
    assert other.engine_request.instructions == "new"


def test_prefix_comes_from_a_cached_parent_with_a_render() -> None:
    render = RenderState(token_count=123)
    parent = _parent_with_call(render=render)
    result = plan(request(input=[FunctionCallOutput(call_id="call_1", output="x")]), parent)
    assert result.engine_request.prefix is render
    assert result.engine_request.prefix_items == len(parent.context) == 2
    assert len(result.engine_request.history) == 3
    assert list(result.engine_request.history)[:2] == list(parent.context)


def test_no_prefix_without_render_or_parent() -> None:
    no_render = plan(request(input=[FunctionCallOutput(call_id="call_1", output="x")]), _parent_with_call())
    assert no_render.engine_request.prefix is None
    assert no_render.engine_request.prefix_items == 0
    fresh = plan(request(input="hi"))
    assert fresh.engine_request.prefix is None and fresh.engine_request.prefix_items == 0


def test_continuation_context_extends_the_parent_without_copying() -> None:
    parent = _parent_with_call()
    result = plan(request(input=[FunctionCallOutput(call_id="call_1", output="x")]), parent)
    assert result.context.parent is parent.context


def test_plan_defaults() -> None:
    result = plan(request(input="hi"))
    assert result.store is True and result.response.store is True
    assert result.response.status == "in_progress"
    assert result.response.id == "resp_new"
    assert result.response.tool_choice == "auto"
    assert plan(request(input="hi", store=False)).store is False


# -- Turn ---------------------------------------------------------------------------------------------


def _turn(stream_id: str | None = None) -> Turn:
    return Turn(Response(id="resp_t", created_at=1, status="in_progress", model="m"), stream_id)


def _usage() -> Usage:
    return Usage(input_tokens=10, cached_tokens=4, output_tokens=3)


def _wire(events: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(encode(event)) for event in events]


def test_text_turn_event_order_and_sequence_numbers() -> None:
    turn = _turn()
    events = turn.opening()
    for piece in ("Hel", "lo", "!"):
        events += turn.feed(TextDelta(piece))
    closing, response = turn.finish(Finished(usage=_usage()), now=5)
    events += closing
    events.append(turn.terminal(encode(response)))
    assert [event_type(e) for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    wire = _wire(events)
    assert [e["sequence_number"] for e in wire] == list(range(len(events)))
    assert all(next(iter(e)) == "type" for e in wire)
    assert all("stream_id" not in e for e in wire)
    assert all("error" not in e for e in wire)
    deltas = [e for e in wire if e["type"] == "response.output_text.delta"]
    item_id = wire[2]["item"]["id"]
    assert [d["delta"] for d in deltas] == ["Hel", "lo", "!"]
    assert all(
        d["item_id"] == item_id and d["output_index"] == 0 and d["content_index"] == 0 and d["logprobs"] == []
        for d in deltas
    )
    assert wire[7]["text"] == "Hello!"
    assert wire[8]["part"] == {"type": "output_text", "text": "Hello!", "annotations": [], "logprobs": []}
    assert response.status == "completed" and response.completed_at == 5
    assert response.usage is not None and response.usage.total_tokens == 13
    assert response.usage.input_tokens_details.cached_tokens == 4
    final = wire[-1]["response"]
    assert final["status"] == "completed"
    assert final["output"][0]["content"][0]["text"] == "Hello!"


def test_every_event_echoes_stream_id_when_set() -> None:
    turn = _turn("lane-7")
    events = turn.opening() + turn.feed(TextDelta("x"))
    closing, response = turn.finish(Finished(usage=_usage()), now=5)
    events += [*closing, turn.terminal(encode(response))]
    assert all(e["stream_id"] == "lane-7" for e in _wire(events))


def test_output_items_of_added_events_are_snapshots() -> None:
    turn = _turn()
    turn.opening()
    added = turn.feed(TextDelta("abc"))[0]
    turn.feed(TextDelta("def"))
    closing, _ = turn.finish(Finished(usage=_usage()), now=5)
    # Encode after the turn has finished: the added event must still show the item as it was then.
    added_wire = json.loads(encode(added))
    assert added_wire["type"] == "response.output_item.added"
    assert added_wire["item"]["status"] == "in_progress"
    assert added_wire["item"]["content"] == []
    done_wire = json.loads(encode(closing[-1]))
    assert done_wire["type"] == "response.output_item.done"
    assert done_wire["item"]["status"] == "completed"
    assert done_wire["item"]["content"][0]["text"] == "abcdef"
    assert done_wire["item"]["id"] == added_wire["item"]["id"]


def test_content_part_added_is_empty_snapshot() -> None:
    turn = _turn()
    turn.opening()
    events = turn.feed(TextDelta("abc"))
    turn.finish(Finished(usage=_usage()), now=1)
    part_added = json.loads(encode(events[1]))
    assert part_added["type"] == "response.content_part.added"
    assert part_added["part"]["text"] == ""


def test_function_call_events() -> None:
    turn = _turn()
    events = turn.opening()
    events += turn.feed(ToolCallStart(call_id="call_abc", name="get_weather"))
    events += turn.feed(ToolArgumentsDelta('{"city":'))
    events += turn.feed(ToolArgumentsDelta('"Paris"}'))
    closing, response = turn.finish(Finished(usage=_usage(), stop_reason="tool_calls"), now=9)
    events += [*closing, turn.terminal(encode(response))]
    wire = _wire(events)
    assert [e["type"] for e in wire] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in wire] == list(range(8))
    added = wire[2]["item"]
    assert added["type"] == "function_call" and added["status"] == "in_progress"
    assert added["arguments"] == "" and added["call_id"] == "call_abc" and added["name"] == "get_weather"
    assert added["id"].startswith("fc_")
    assert all(e["item_id"] == added["id"] and e["output_index"] == 0 for e in wire[3:6])
    assert wire[5]["name"] == "get_weather" and wire[5]["arguments"] == '{"city":"Paris"}'
    done = wire[6]["item"]
    assert done["status"] == "completed" and done["arguments"] == '{"city":"Paris"}'
    assert done["id"] == added["id"]
    assert response.status == "completed"
    (call,) = response.output
    assert isinstance(call, FunctionCall) and call.arguments == '{"city":"Paris"}'


def test_text_then_two_calls_get_increasing_output_indexes() -> None:
    turn = _turn()
    events = turn.opening()
    events += turn.feed(TextDelta("thinking"))
    events += turn.feed(ToolCallStart(call_id="c1", name="a"))
    events += turn.feed(ToolArgumentsDelta("{}"))
    events += turn.feed(ToolCallStart(call_id="c2", name="b"))
    events += turn.feed(ToolArgumentsDelta("{}"))
    closing, response = turn.finish(Finished(usage=_usage(), stop_reason="tool_calls"), now=1)
    wire = _wire(events + closing)
    added = [e["output_index"] for e in wire if e["type"] == "response.output_item.added"]
    done = [e["output_index"] for e in wire if e["type"] == "response.output_item.done"]
    assert added == done == [0, 1, 2]
    assert [type(item) for item in response.output] == [Message, FunctionCall, FunctionCall]
    assert [e["sequence_number"] for e in wire] == list(range(len(wire)))


def test_arguments_before_a_call_is_an_error() -> None:
    turn = _turn()
    turn.opening()
    with pytest.raises(ValueError):
        turn.feed(ToolArgumentsDelta("{}"))


def test_finish_with_length_is_incomplete() -> None:
    turn = _turn()
    turn.opening()
    turn.feed(TextDelta("cut"))
    _, response = turn.finish(Finished(usage=_usage(), stop_reason="length"), now=5)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.completed_at is None
    terminal = turn.terminal(encode(response))
    assert event_type(terminal) == "response.incomplete"
    decoded = json.loads(encode(terminal))
    assert decoded["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_fail_gives_failed_with_error() -> None:
    turn = _turn()
    opening = turn.opening()
    turn.feed(TextDelta("partial"))
    response = turn.fail("server_error", "engine died")
    assert response.status == "failed"
    assert response.error is not None
    assert (response.error.code, response.error.message) == ("server_error", "engine died")
    assert response.output == []  # the open message is dropped
    terminal = turn.terminal(encode(response))
    assert event_type(terminal) == "response.failed"
    decoded = json.loads(encode(terminal))
    assert "error" not in {k for k in decoded if k != "response"}  # no top-level error key
    assert decoded["response"]["error"] == {"code": "server_error", "message": "engine died"}
    assert decoded["sequence_number"] == len(opening) + 3  # added, part added, delta, then terminal


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("completed", "response.completed"),
        ("incomplete", "response.incomplete"),
        ("failed", "response.failed"),
    ],
)
def test_terminal_type_per_status(status: str, expected: str) -> None:
    turn = _turn()
    turn.response = msgspec.structs.replace(turn.response, status=status)
    assert event_type(turn.terminal(b"{}")) == expected


def test_warmup_opening_without_generate() -> None:
    turn = _turn()
    events = turn.opening(generate=False)
    assert [event_type(e) for e in events] == ["response.created"]
    _, response = turn.finish(Finished(usage=Usage()), now=1)
    terminal = turn.terminal(encode(response))
    assert event_type(terminal) == "response.completed"
    assert terminal.sequence_number == 1
    assert response.output == []


def test_feeding_finished_is_refused() -> None:
    turn = _turn()
    with pytest.raises(TypeError):
        turn.feed(Finished(usage=Usage()))  # type: ignore[arg-type]


# -- compact_context ----------------------------------------------------------------------------------


def test_compact_keeps_user_messages_and_ends_with_a_compaction() -> None:
    history = EMPTY_CONTEXT.extend(
        [
            Message(role="system", content="sys rules"),
            user("what is the weather?", id="msg_u"),
            Message(role="assistant", content=[OutputText(text="let me check")], id="msg_a"),
            FunctionCall(call_id="call_w", name="weather", arguments='{"city":"Oslo"}', id="fc_w"),
            FunctionCallOutput(call_id="call_w", output="rainy, 7C", id="fco_w"),
        ]
    )
    parent = cached("resp_p", context=history)
    result = compact_context(CompactRequest(model="m", input="and tomorrow?"), parent, now=42)
    assert result.object == "response.compaction"
    assert result.created_at == 42
    *kept, last = result.output
    assert [(m.role, m.content) for m in kept] == [
        ("user", "what is the weather?"),
        ("user", "and tomorrow?"),
    ]
    assert all(isinstance(m, Message) and m.id for m in kept)
    assert kept[0].id == "msg_u"
    assert isinstance(last, Compaction)
    summary = decode_summary(last.encrypted_content)
    assert summary is not None
    assert "rainy, 7C" in summary
    assert "call_w" in summary
    assert "weather" in summary
    assert "let me check" in summary
    assert "what is the weather?" not in summary  # kept verbatim, not summarised
    encoded = json.loads(msgspec.json.encode(result))
    assert encoded["output"][-1]["type"] == "compaction"


def test_compact_without_parent_uses_only_input() -> None:
    result = compact_context(
        CompactRequest(
            model="m",
            input=[
                user("hi"),
                FunctionCall(call_id="c1", name="ls", arguments="{}"),
                FunctionCallOutput(call_id="c1", output="file.txt"),
            ],
        ),
        None,
        now=1,
    )
    *kept, last = result.output
    assert len(kept) == 1
    assert isinstance(last, Compaction)
    summary = decode_summary(last.encrypted_content)
    assert summary is not None and "file.txt" in summary


def test_compaction_round_trips_into_the_next_compaction() -> None:
    first = compact_context(
        CompactRequest(
            model="m",
            input=[
                user("q"),
                FunctionCall(call_id="c1", name="f", arguments="{}"),
                FunctionCallOutput(call_id="c1", output="first-output"),
            ],
        ),
        None,
        now=1,
    )
    second = compact_context(CompactRequest(model="m", input=[*first.output, user("next")]), None, now=2)
    last = second.output[-1]
    assert isinstance(last, Compaction)
    summary = decode_summary(last.encrypted_content)
    assert summary is not None and "first-output" in summary


def test_decode_summary_rejects_foreign_payloads() -> None:
    assert decode_summary("gAAAAABforeign") is None
    assert decode_summary("lw1:!!!notbase64") is None


# -- rate limiting ---------------------------------------------------------------------------------------


def test_token_bucket_allows_the_burst_then_paces_at_the_rate() -> None:
    from loopwire.core.ratelimit import RateLimiter

    limiter = RateLimiter(rate_per_s=2.0, burst=3)
    assert [limiter.check("k", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]  # at the burst
    wait = limiter.check("k", 0.0)  # one past it
    assert wait == pytest.approx(0.5)
    assert limiter.check("k", 0.49) > 0.0
    assert limiter.check("k", 0.5) == 0.0  # one token refilled after 1 / rate
    assert limiter.check("other", 0.5) == 0.0  # keys are independent


def test_rate_limiter_table_is_bounded() -> None:
    from loopwire.core.ratelimit import RateLimiter

    limiter = RateLimiter(rate_per_s=1.0, burst=1, max_owners=3)
    for owner in "abcd":
        limiter.check(owner, 0.0)
    assert len(limiter) == 3
    assert limiter.check("a", 0.0) == 0.0  # "a" was forgotten: a fresh bucket
    with pytest.raises(ValueError):
        RateLimiter(rate_per_s=0.0, burst=1)


# -- the memory budget of connection caches ---------------------------------------------------------


def _cached(conn: ConnectionState[Any], response_id: str, lane: str, size: int) -> CachedResponse:
    cached = CachedResponse(response_id, conn.owner, lane, EMPTY_CONTEXT, None, False, size)
    conn.commit(cached)
    return cached


def test_budget_evicts_the_least_recently_used_idle_lane_at_the_edge() -> None:
    from loopwire.core.budget import CacheBudget

    budget = CacheBudget(max_bytes=300)
    first: ConnectionState[Any] = ConnectionState(Limits(), opened_at=0.0)
    second: ConnectionState[Any] = ConnectionState(Limits(), opened_at=0.0)
    assert budget.record(first, _cached(first, "r1", "a", 100)) == []
    assert budget.record(second, _cached(second, "r2", "b", 100)) == []
    assert budget.record(first, _cached(first, "r3", "c", 100)) == []  # exactly at the budget
    assert budget.total == 300
    evicted = budget.record(second, _cached(second, "r4", "d", 1))  # one past it
    assert [cached.id for cached in evicted] == ["r1"]
    assert first.lookup("r1") is None and first.lookup("r3") is not None
    assert budget.total == 201


def test_budget_never_evicts_a_running_lane_and_forgets_closed_connections() -> None:
    from loopwire.core.budget import CacheBudget

    budget = CacheBudget(max_bytes=100)
    conn: ConnectionState[Any] = ConnectionState(Limits(), opened_at=0.0, account=budget)
    conn.submit("busy", "job")  # the lane is running
    budget.record(conn, _cached(conn, "r1", "busy", 80))
    evicted = budget.record(conn, _cached(conn, "r2", "idle", 80))
    assert evicted == [] and conn.lookup("r1") is not None and budget.total == 160  # over, but all busy/new
    conn.finish("busy")
    other: ConnectionState[Any] = ConnectionState(Limits(), opened_at=0.0, account=budget)
    evicted = budget.record(other, _cached(other, "r3", "x", 10))
    assert [cached.id for cached in evicted] == ["r1"]  # now idle, and the least recently used
    assert budget.total == 90
    other.clear()  # the connection closed
    assert budget.total == 80 and len(budget) == 1
    conn.clear()
    assert budget.total == 0 and len(budget) == 0


# -- the conversation's root: the replica key every node derives ---------------------------------------------


def test_the_engine_key_is_the_conversations_root_on_every_lane_and_node() -> None:
    first = plan(request(input="hi"))
    assert first.root == "resp_new" and first.engine_request.cache_key == "alice/resp_new"
    parent = CachedResponse("resp_2", "alice", "a", EMPTY_CONTEXT, None, stored=True, root="resp_1")
    for lane in ("a", "another-lane"):  # a continuation and a fork keep the root, whatever the lane
        follow = plan(request(input="more", previous_response_id="resp_2", store=False), parent, lane)
        assert follow.root == "resp_1" and follow.engine_request.cache_key == "alice/resp_1"
    # a stored turn whose parent never was stored is stored unlinked: it roots the chain other nodes see
    unstored = CachedResponse("resp_3", "alice", "a", EMPTY_CONTEXT, None, stored=False, root="resp_1")
    assert plan(request(input="x", previous_response_id="resp_3"), unstored).root == "resp_new"
    assert plan(request(input="x", previous_response_id="resp_3", store=False), unstored).root == "resp_1"
    keyed = plan(request(input="x", previous_response_id="resp_2", prompt_cache_key="k"), parent)
    assert keyed.engine_request.cache_key == "k"  # the client's own key wins
    assert CachedResponse("resp_9", "alice", "a", EMPTY_CONTEXT, None, stored=False).root_id == "resp_9"
