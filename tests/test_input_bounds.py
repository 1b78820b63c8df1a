"""Small inputs that would make the server do large work, against a real `loopwire serve` subprocess: deep
JSON nesting anywhere in a body (known or unknown fields), free-form values nested past `max_json_depth`,
more tools than `max_tools`, and the input_items page size. Each is a 4xx naming the problem, at its edge;
never a 500, a dropped connection or a hang. Raw HTTP and raw WebSocket frames, so nothing client-side
reshapes the body.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import websockets
from conftest import API_KEY, ServerProcess

DEEP = 10_000
DEPTH_LIMIT = 6
TOOLS_LIMIT = 3


@contextmanager
def serving(directory: Path, *args: str, store: str = "memory") -> Iterator[ServerProcess]:
    server = ServerProcess(store, directory / "server.log", args).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    limits = ("--limit", f"max_json_depth={DEPTH_LIMIT}", "--limit", f"max_tools={TOOLS_LIMIT}")
    with serving(tmp_path_factory.mktemp("bounds"), *limits) as server:
        yield server


def nested(depth: int) -> str:
    """JSON arrays nested `depth` levels deep (depth 1 is `[]`)."""
    return "[" * depth + "]" * depth


def nested_object(depth: int) -> Any:
    """A JSON object `depth` levels deep (depth 1 is `{}`)."""
    value: Any = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def call(server: ServerProcess, path: str, body: str | None = None) -> tuple[int, Any]:
    """POST `body` (GET without one); the status and the parsed JSON answer."""
    headers = {"content-type": "application/json", "authorization": f"Bearer {API_KEY}"}
    data = body.encode() if body is not None else None
    request = urllib.request.Request(server.base_url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def post(server: ServerProcess, path: str, body: str) -> tuple[int, Any]:
    return call(server, path, body)


def get(server: ServerProcess, path: str) -> tuple[int, Any]:
    return call(server, path)


def ws_url(server: ServerProcess) -> str:
    return server.base_url.replace("http://", "ws://") + "/responses"


async def ws_exchange(server: ServerProcess, frames: list[str]) -> list[dict[str, Any]]:
    """Send each frame and collect its terminal event (error, completed, failed); then a plain turn must
    still complete on the same socket."""
    answers: list[dict[str, Any]] = []
    headers = {"authorization": f"Bearer {API_KEY}"}
    async with websockets.connect(ws_url(server), max_size=None, additional_headers=headers) as socket:
        for frame in [*frames, json.dumps({"type": "response.create", "model": "sim", "input": "ok?"})]:
            await socket.send(frame)
            while True:
                event = json.loads(await asyncio.wait_for(socket.recv(), timeout=20))
                if event["type"] in ("error", "response.completed", "response.failed"):
                    answers.append(event)
                    break
    assert answers[-1]["type"] == "response.completed", answers[-1]
    return answers[:-1]


def assert_400(status: int, body: Any, *, param: str | None = None, code: str | None = None) -> None:
    assert status == 400, (status, body)
    error = body["error"]
    assert error["type"] == "invalid_request_error" and error["message"], error
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error


# -- JSON nested deeper than the decoder goes ----------------------------------------------------------------


@pytest.mark.parametrize("field", ["unknown_field", "reasoning", "input", "metadata", "tools"])
def test_deep_nesting_anywhere_in_an_http_body_is_400(bounded: ServerProcess, field: str) -> None:
    body = f'{{"model": "sim", "{field}": {nested(DEEP)}}}'
    for path in ("/responses", "/responses/input_tokens", "/responses/compact"):
        status, answer = post(bounded, path, body)
        assert_400(status, answer)
    status, answer = post(bounded, "/responses", '{"model": "sim", "input": "after"}')
    assert status == 200 and answer["status"] == "completed"


async def test_deep_nesting_in_a_websocket_frame_is_an_error_event(bounded: ServerProcess) -> None:
    frames = [
        f'{{"type": "response.create", "model": "sim", "{field}": {nested(DEEP)}}}'
        for field in ("unknown_field", "reasoning", "input", "stream_id")
    ]
    frames.append(f'{{"model": "sim", "type": {nested(DEEP)}}}')
    for event in await ws_exchange(bounded, frames):
        assert event["type"] == "error" and event["status"] == 400, event
        assert event["error"]["type"] == "invalid_request_error"


def test_deep_nesting_without_a_message_type_is_400(bounded: ServerProcess) -> None:
    """The lenient retry (message items without "type") decodes the body a second time."""
    body = f'{{"model": "sim", "input": [{{"role": "user", "content": "x"}}], "extra": {nested(DEEP)}}}'
    status, answer = post(bounded, "/responses", body)
    assert_400(status, answer)


# -- free-form values at max_json_depth ----------------------------------------------------------------------

FREE_FORM = {
    "reasoning": lambda depth: {"reasoning": nested_object(depth)},
    "text": lambda depth: {"text": nested_object(depth)},
    "tool_choice": lambda depth: {"tool_choice": nested_object(depth)},
    "tools[0].parameters": lambda depth: {
        "tools": [{"type": "function", "name": "f", "parameters": nested_object(depth)}]
    },
    "input[0].summary": lambda depth: {
        "input": [{"type": "reasoning", "id": "rs_1", "summary": [nested_object(depth - 1)]}]
    },
    "input[0].content[0].annotations": lambda depth: {
        "input": [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "x", "annotations": [nested_object(depth - 1)]}],
            }
        ]
    },
}


@pytest.mark.parametrize("param", list(FREE_FORM))
def test_free_form_value_at_max_depth_passes_and_one_past_is_400(bounded: ServerProcess, param: str) -> None:
    at = {"model": "sim", "input": "hi", **FREE_FORM[param](DEPTH_LIMIT)}
    past = {"model": "sim", "input": "hi", **FREE_FORM[param](DEPTH_LIMIT + 1)}
    status, answer = post(bounded, "/responses", json.dumps(at))
    if param == "tool_choice":  # refused at any depth: not a tool choice, but not for its depth
        assert_400(status, answer, param="tool_choice", code=None)
        assert answer["error"]["code"] != "json_too_deep"
    else:
        assert status == 200 and answer["status"] == "completed", answer
    status, answer = post(bounded, "/responses", json.dumps(past))
    assert_400(status, answer, param=param, code="json_too_deep")


async def test_free_form_value_past_max_depth_over_websocket(bounded: ServerProcess) -> None:
    frame = {"type": "response.create", "model": "sim", "input": "hi", "reasoning": nested_object(7)}
    [event] = await ws_exchange(bounded, [json.dumps(frame)])
    assert event["type"] == "error" and event["error"]["param"] == "reasoning", event
    assert event["error"]["code"] == "json_too_deep"


def test_nested_values_the_decoder_takes_are_echoed_without_a_500(tmp_path: Path) -> None:
    """At the default limits, the deepest free-form value accepted must also encode back (events and the
    stored record nest it further than the request did)."""
    from loopwire.core.limits import Limits

    with serving(tmp_path, store=f"sqlite:{tmp_path / 'db'}") as server:
        depth = Limits().max_json_depth
        body = {"model": "sim", "input": "hi", "reasoning": nested_object(depth), "stream": True}
        status, _ = post_stream(server, json.dumps(body))
        assert status == 200
        body["stream"] = False
        status, answer = post(server, "/responses", json.dumps(body))
        assert status == 200 and answer["status"] == "completed", answer
        status, answer = get(server, f"/responses/{answer['id']}")
        assert status == 200


def post_stream(server: ServerProcess, body: str) -> tuple[int, str]:
    request = urllib.request.Request(
        server.base_url + "/responses",
        data=body.encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {API_KEY}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=20) as reply:
        text = reply.read().decode()
    assert "response.completed" in text, text[-500:]
    return reply.status, text


# -- counts --------------------------------------------------------------------------------------------------


def _tools(count: int) -> list[dict[str, Any]]:
    return [{"type": "function", "name": f"t{n}", "parameters": {"type": "object"}} for n in range(count)]


def test_tools_at_max_tools_pass_and_one_past_is_400(bounded: ServerProcess) -> None:
    status, answer = post(
        bounded, "/responses", json.dumps({"model": "sim", "input": "x", "tools": _tools(3)})
    )
    assert status == 200 and answer["status"] == "completed", answer
    past = json.dumps({"model": "sim", "input": "x", "tools": _tools(4)})
    for path in ("/responses", "/responses/input_tokens"):
        status, answer = post(bounded, path, past)
        assert_400(status, answer, param="tools", code="array_above_max_length")


async def test_tools_past_max_tools_over_websocket(bounded: ServerProcess) -> None:
    frame = {"type": "response.create", "model": "sim", "input": "x", "tools": _tools(4)}
    [event] = await ws_exchange(bounded, [json.dumps(frame)])
    assert event["type"] == "error" and event["error"]["param"] == "tools", event


def test_compact_counts_input_items(tmp_path: Path) -> None:
    with serving(tmp_path, "--limit", "max_input_items=3") as server:
        items = [{"role": "user", "content": f"m{n}"} for n in range(3)]
        status, answer = post(server, "/responses/compact", json.dumps({"model": "sim", "input": items}))
        assert status == 200, answer
        items.append({"role": "user", "content": "one too many"})
        status, answer = post(server, "/responses/compact", json.dumps({"model": "sim", "input": items}))
        assert_400(status, answer, param="input", code="array_above_max_length")


def test_input_items_page_size_at_100_passes_and_101_is_400(bounded: ServerProcess) -> None:
    status, created = post(bounded, "/responses", json.dumps({"model": "sim", "input": "x", "store": True}))
    assert status == 200
    status, page = get(bounded, f"/responses/{created['id']}/input_items?limit=100")
    assert status == 200 and page["object"] == "list"
    for query in ("limit=101", "limit=" + "9" * 5000):
        status, answer = get(bounded, f"/responses/{created['id']}/input_items?{query}")
        assert_400(status, answer, param="limit")


def test_a_schema_asking_for_a_huge_value_completes_quickly(bounded: ServerProcess) -> None:
    """The sim engine's generator cuts the value short (MAX_VALUES, MAX_ARRAY_ITEMS, MAX_TEXT_CHARS)."""
    grid: dict[str, Any] = {"type": "string", "minLength": 10**9}
    for _ in range(2):  # within the server's max_json_depth
        grid = {"type": "array", "items": grid, "minItems": 10**9}
    tool = {
        "type": "function",
        "name": "grid",
        "parameters": {
            "type": "object",
            "properties": {"g": grid, "n": {"type": "integer", "minimum": 10**400}},
        },
    }
    body = {"model": "sim", "input": "x", "tools": [tool], "tool_choice": "required"}
    status, answer = post(bounded, "/responses", json.dumps(body))
    assert status == 200 and answer["status"] == "completed", answer
    [call] = answer["output"]
    assert call["type"] == "function_call"
    assert 64 * 1024 <= len(call["arguments"]) < 256 * 1024


# -- in process: the sim engine's generator and tokenizer at their bounds -----------------------------------


def test_generator_array_and_string_bounds_at_the_edge() -> None:
    import random

    from loopwire.engines.sim import schema_args

    rng = random.Random(3)
    most = schema_args.MAX_ARRAY_ITEMS
    at = {"type": "object", "properties": {"a": {"type": "array", "minItems": most, "maxItems": most}}}
    past = {"type": "object", "properties": {"a": {"type": "array", "minItems": most + 1}}, "required": ["a"]}
    at["required"] = ["a"]
    assert len(schema_args.generate_arguments(at, rng)["a"]) == most
    assert len(schema_args.generate_arguments(past, rng)["a"]) == most
    longest = schema_args.MAX_STRING_CHARS
    text = {
        "type": "object",
        "properties": {"s": {"type": "string", "minLength": longest}},
        "required": ["s"],
    }
    assert len(schema_args.generate_arguments(text, rng)["s"]) >= longest
    text["properties"]["s"]["minLength"] = longest + 1  # type: ignore[index]
    assert len(schema_args.generate_arguments(text, rng)["s"]) == longest
    many = {"type": "array", "items": {"type": "string", "minLength": longest}, "minItems": most}
    strings = schema_args.generate_arguments(
        {"type": "object", "properties": {"m": many}, "required": ["m"]}, rng
    )["m"]
    assert len(strings) == most  # every item, the padding cut at MAX_TEXT_CHARS over all of them
    assert schema_args.MAX_TEXT_CHARS <= sum(map(len, strings)) < schema_args.MAX_TEXT_CHARS + most * 40


def test_generator_spends_at_most_max_values() -> None:
    import random

    from loopwire.engines.sim import schema_args

    def count(value: Any) -> int:
        if isinstance(value, dict):
            return 1 + sum(map(count, value.values()))
        if isinstance(value, list):
            return 1 + sum(map(count, value))
        return 1

    leaf = {"type": "object", "properties": {f"p{n}": {"type": "integer"} for n in range(50)}}
    leaf["required"] = list(leaf["properties"])  # type: ignore[arg-type]
    schema: dict[str, Any] = leaf
    for _ in range(4):
        schema = {"type": "array", "items": schema, "minItems": 60}
    value = schema_args.generate_arguments(
        {"type": "object", "properties": {"x": schema}, "required": ["x"]}, random.Random(1)
    )
    assert count(value) <= schema_args.MAX_VALUES + 1  # + the top-level object
    assert count(value) > schema_args.MAX_VALUES // 2  # spent, not refused


def test_split_tokens_is_linear_in_a_whitespace_run() -> None:
    """A trailing run of whitespace was quadratic (16,000 spaces: 7 s); a megabyte of it must not hang."""
    from loopwire.engines.sim.tokenizer import count_tokens, split_tokens

    for text in (" " * 1_000_000, "x" + " \n" * 500_000):
        tokens = split_tokens(text)
        assert "".join(tokens) == text and len(tokens) == max(count_tokens(text), 1)


@pytest.mark.parametrize(
    ("value", "depth"),
    [
        ({}, 1),
        ([[], {"a": [1, "x"]}], 3),
        ({"s": '[[[{{{"\\]]]'}, 1),  # brackets, quotes and backslashes inside strings do not count
        ({"a": "]", "b": [[[]]], "c": "["}, 4),  # nor can they hide nesting
        (json.loads(nested(40)), 40),
    ],
)
def test_json_depth_counts_containers_only(value: Any, depth: int) -> None:
    import msgspec

    from loopwire.core.bounds import _json_depth

    assert _json_depth(msgspec.json.encode(value), 100) == depth
    assert _json_depth(msgspec.json.encode(value), depth - 1) == depth  # counted up to the cap + 1


def test_many_item_references_cost_history_plus_references_not_their_product() -> None:
    """20,000 references into a 20,000-item context took minutes on the event loop (each scanned it)."""
    from loopwire.core.plan import _prepare_items
    from loopwire.protocol.context import EMPTY_CONTEXT
    from loopwire.protocol.items import ItemReference, Message

    count = 20_000
    first = [Message(role="user", content="a", id="dup")]
    history = EMPTY_CONTEXT.extend(first).extend(
        [Message(role="user", content=f"m{n}", id=f"msg_{n}") for n in range(count)]
        + [
            Message(role="user", content="first of two", id="twice"),
            Message(role="user", content="x", id="twice"),
        ]
    )
    references: list[Any] = [ItemReference(id=f"msg_{count - 1 - n % 100}") for n in range(count)]
    references += [ItemReference(id="twice"), ItemReference(id="dup")]
    prepared = _prepare_items(references, history)
    assert [item.content for item in prepared[:3]] == [f"m{count - 1}", f"m{count - 2}", f"m{count - 3}"]
    assert prepared[-2].content == "first of two"  # as the scan resolves it, with or without the index
    assert prepared[-1] is first[0]
    few = _prepare_items([ItemReference(id="twice")], history)
    assert few[0] is prepared[-2]


# -- bytes parked in a connection's queue ------------------------------------------------------------------


def test_queued_bytes_at_the_limit_pass_and_one_past_is_429() -> None:
    from loopwire.core.connection import ConnectionState
    from loopwire.core.limits import Limits
    from loopwire.protocol.errors import ProtocolError

    state: ConnectionState[str] = ConnectionState(
        Limits(max_queued_bytes=100, max_in_flight=1), opened_at=0.0
    )
    assert state.submit("a", "runs at once", 100) == [("a", "runs at once")]  # started: not queued
    assert state.queued_bytes == 0
    assert state.submit("b", "waits", 60) == [] and state.submit("c", "waits too", 40) == []
    assert state.queued_bytes == 100
    with pytest.raises(ProtocolError) as refused:
        state.submit("d", "one byte past", 1)
    assert refused.value.status == 429 and refused.value.code == "too_many_queued_responses"
    assert state.finish("a") == [("b", "waits")] and state.queued_bytes == 40
    assert state.submit("d", "fits again", 60) == [] and state.queued_bytes == 100


@pytest.fixture(scope="module")
def slow_queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    limits = ("--limit", "max_queued_bytes=3000", "--limit", "max_in_flight=1", "--sim-ttft-ms", "1500")
    with serving(tmp_path_factory.mktemp("queue"), *limits) as server:
        yield server


def frame_of_size(size: int, lane: str) -> str:
    base = {"type": "response.create", "model": "sim", "store": False, "stream_id": lane, "input": ""}
    base["input"] = "x" * (size - len(json.dumps(base)))
    frame = json.dumps(base)
    assert len(frame) == size
    return frame


async def test_queued_bytes_over_websocket(slow_queue: ServerProcess) -> None:
    headers = {"authorization": f"Bearer {API_KEY}"}
    async with websockets.connect(ws_url(slow_queue), max_size=None, additional_headers=headers) as socket:
        await socket.send(frame_of_size(2000, "running"))  # starts at once, then takes 1.5 s
        await socket.send(frame_of_size(1500, "waits"))
        await socket.send(frame_of_size(1500, "at-the-limit"))  # 3,000 bytes queued
        await socket.send(frame_of_size(200, "past"))
        queued: set[str] = set()
        while True:
            event = json.loads(await asyncio.wait_for(socket.recv(), timeout=20))
            if event["type"] == "error":
                break
            if event["type"] == "response.queued":  # waiting behind max_in_flight=1
                queued.add(event["stream_id"])
                continue
            assert event.get("stream_id") == "running", event
        assert event["status"] == 429 and event["stream_id"] == "past", event
        assert queued <= {"waits", "at-the-limit"}
        assert event["error"]["code"] == "too_many_queued_responses"
        done: set[str] = set()
        while done != {"running", "waits", "at-the-limit"}:
            event = json.loads(await asyncio.wait_for(socket.recv(), timeout=20))
            assert event["type"] != "error", event
            if event["type"] == "response.completed":
                done.add(event["stream_id"])
