"""The core SDK scenarios on a real model: the official `openai` SDK against `loopwire serve --engine
openai-chat --engine-option dialect=llama-cpp-python` in front of a real llama.cpp server (llama-cpp-python)
serving SmolLM2-135M-Instruct. HTTP and WebSocket mode, forced tool calls, chains, lanes, store=false
continuation, usage that is the server's own count, and the default output cap.

The model decides what it says (it is tiny): assertions hold for any answer it may give; a tool call is
only expected where tool_choice forces it (the server then constrains the output by grammar).
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import ServerProcess, make_async_client, make_client

from loopwire.bench.llama import LlamaServer

from .conftest import DIALECT, gateway

pytestmark = pytest.mark.real

MODEL = "smollm2"
TERMINAL = {"response.completed", "response.incomplete", "response.failed", "error"}
WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo", "Rome", "Lima"]}},
        "required": ["city"],
    },
}
TIME: dict[str, Any] = {
    "type": "function",
    "name": "get_time",
    "description": "Current time in a time zone.",
    "parameters": {
        "type": "object",
        "properties": {"zone": {"type": "string", "enum": ["Asia/Tokyo", "Europe/Paris"]}},
        "required": ["zone"],
    },
}
SHORT = 24
"""max_output_tokens for text turns: the tier stays fast whatever the model says."""
# The tools' strings are enums: the server's grammar lets this model write prose into a free string
# (newlines included) until the token limit, which would make the arguments invalid JSON.


def chat(llama: LlamaServer, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One request straight to the llama.cpp server (to compare with what loopwire reports)."""
    request = urllib.request.Request(
        f"{llama.base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, {"raw": error.read().decode(errors="replace")}


def prompt_tokens(llama: LlamaServer, messages: list[dict[str, Any]], **extra: Any) -> int:
    status, answer = chat(llama, {"messages": messages, "max_tokens": 1, **extra})
    assert status == 200, answer
    return int(answer["usage"]["prompt_tokens"])


@pytest.fixture(scope="module")
def sdk(real_server: ServerProcess) -> Iterator[openai.OpenAI]:
    with make_client(real_server.base_url, strict=True) as client:
        yield client


@pytest.fixture
async def connection(real_server: ServerProcess) -> AsyncIterator[Any]:
    """A WebSocket-mode connection of the official SDK to the real-model server."""
    client = make_async_client(real_server.base_url)
    try:
        async with client.responses.connect() as socket:
            yield socket
    finally:
        await client.close()


def call_of(response: Any) -> Any:
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) >= 1, response.output
    return calls[0]


# -- HTTP ------------------------------------------------------------------------------------------------


def test_a_text_turn_reports_the_servers_own_token_counts(sdk: openai.OpenAI, llama: LlamaServer) -> None:
    response = sdk.responses.create(
        model=MODEL,
        instructions="Answer in one short sentence.",
        input="Name a colour.",
        max_output_tokens=SHORT,
    )
    assert response.status in ("completed", "incomplete"), response.error
    assert response.output_text.strip()
    usage = response.usage
    assert usage is not None
    # the input count is llama.cpp's own, for exactly the prompt loopwire sent (not an estimate)
    expected = prompt_tokens(
        llama,
        [
            {"role": "system", "content": "Answer in one short sentence."},
            {"role": "user", "content": "Name a colour."},
        ],
    )
    assert usage.input_tokens == expected
    assert 0 < usage.output_tokens <= SHORT
    if response.status == "incomplete":
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
        assert usage.output_tokens == SHORT


def test_input_tokens_counts_what_the_turn_then_reports(sdk: openai.OpenAI) -> None:
    fields: dict[str, Any] = {"model": MODEL, "instructions": "Be brief.", "input": "Count me, please."}
    counted = sdk.responses.input_tokens.count(**fields)
    created = sdk.responses.create(**fields, max_output_tokens=8)
    assert created.usage is not None and counted.input_tokens == created.usage.input_tokens
    follow: dict[str, Any] = {"model": MODEL, "input": "And now?", "previous_response_id": created.id}
    counted_follow = sdk.responses.input_tokens.count(**follow)
    chained = sdk.responses.create(**follow, max_output_tokens=8)
    assert chained.usage is not None and counted_follow.input_tokens == chained.usage.input_tokens
    assert counted_follow.input_tokens > counted.input_tokens


def test_streamed_text_events_arrive_in_order(sdk: openai.OpenAI) -> None:
    with sdk.responses.create(
        model=MODEL, input="Say hello.", max_output_tokens=SHORT, stream=True
    ) as stream:
        events = list(stream)
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] in ("response.completed", "response.incomplete")
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas and deltas == events[-1].response.output_text
    assert [event.sequence_number for event in events] == list(range(len(events)))


def test_a_named_tool_choice_gives_a_call_with_valid_arguments(sdk: openai.OpenAI) -> None:
    response = sdk.responses.create(
        model=MODEL,
        input="What time is it in Tokyo?",
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "name": "get_time"},
    )
    assert response.status == "completed", response.error
    call = call_of(response)
    assert call.name == "get_time" and call.call_id
    assert json.loads(call.arguments)["zone"] in ("Asia/Tokyo", "Europe/Paris")


def test_required_with_one_tool_streams_the_arguments(sdk: openai.OpenAI) -> None:
    with sdk.responses.create(
        model=MODEL, input="Weather in Oslo?", tools=[WEATHER], tool_choice="required", stream=True
    ) as stream:
        events = list(stream)
    assert events[-1].type == "response.completed"
    deltas = [event.delta for event in events if event.type == "response.function_call_arguments.delta"]
    assert len(deltas) > 1  # token by token, not one piece
    call = call_of(events[-1].response)
    assert call.arguments == "".join(deltas)
    assert json.loads(call.arguments)["city"] in ("Paris", "Oslo", "Rome", "Lima")


def test_required_among_several_tools_gives_a_call(sdk: openai.OpenAI) -> None:
    response = sdk.responses.create(
        model=MODEL, input="Weather in Paris?", tools=[WEATHER, TIME], tool_choice="required"
    )
    assert response.status == "completed", response.error
    assert call_of(response).name in ("get_weather", "get_time")


def test_tool_loop_chained_over_http_sends_the_output_to_the_model(sdk: openai.OpenAI) -> None:
    first = sdk.responses.create(
        model=MODEL, input="Weather in Rome?", tools=[WEATHER], tool_choice="required"
    )
    call = call_of(first)
    short, long = (
        sdk.responses.create(
            model=MODEL,
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": output}],
            max_output_tokens=SHORT,
        )
        for output in ("21 C", "21 C, sunny, light wind from the north-west, humidity 40 percent")
    )
    for second in (short, long):
        assert second.status in ("completed", "incomplete"), second.error
        assert second.previous_response_id == first.id
        assert second.output_text.strip()
    assert short.usage is not None and long.usage is not None
    # the tool's output reached the model's prompt (llama-cpp-python's template alone would drop it)
    assert long.usage.input_tokens > short.usage.input_tokens + 8


def test_auto_tool_choice_answers(sdk: openai.OpenAI) -> None:
    """tool_choice auto (the default) with tools: the server's own handling answers an empty stream or an
    empty message; through the dialect, the model answers in text or with a call."""
    response = sdk.responses.create(
        model=MODEL, input="Say hello to me.", tools=[WEATHER], max_output_tokens=SHORT
    )
    assert response.status in ("completed", "incomplete"), response.error
    kinds = {item.type for item in response.output}
    assert kinds & {"message", "function_call"}
    if "message" in kinds:
        assert response.output_text.strip()


def test_store_false_is_not_chainable_over_http(sdk: openai.OpenAI) -> None:
    response = sdk.responses.create(model=MODEL, input="Hi.", store=False, max_output_tokens=8)
    assert response.status in ("completed", "incomplete")
    with pytest.raises(openai.BadRequestError):
        sdk.responses.create(
            model=MODEL, input="again", previous_response_id=response.id, max_output_tokens=8
        )


# -- WebSocket mode --------------------------------------------------------------------------------------


async def ws_turn(connection: Any, **fields: Any) -> list[Any]:
    await connection.response.create(model=MODEL, **fields)
    events: list[Any] = []
    while True:
        event = await asyncio.wait_for(connection.recv(), 60.0)
        events.append(event)
        if event.type in TERMINAL:
            return events


async def test_websocket_store_false_continuation_carries_the_context(connection: Any) -> None:
    first = (await ws_turn(connection, input="My name is Ada.", store=False, max_output_tokens=SHORT))[-1]
    assert first.type in ("response.completed", "response.incomplete"), first
    second = (
        await ws_turn(
            connection,
            input="What is my name?",
            previous_response_id=first.response.id,
            store=False,
            max_output_tokens=SHORT,
        )
    )[-1]
    assert second.type in ("response.completed", "response.incomplete"), second
    # only the new input was sent; the server carried the first turn (input and output) upstream
    assert second.response.usage.input_tokens > (
        first.response.usage.input_tokens + first.response.usage.output_tokens
    )
    assert second.response.output_text.strip()


async def test_websocket_forced_call_then_output(connection: Any) -> None:
    events = await ws_turn(
        connection, input="Weather in Lima?", tools=[WEATHER], tool_choice="required", store=False
    )
    done = events[-1]
    assert done.type == "response.completed", done
    call = call_of(done.response)
    assert "response.function_call_arguments.delta" in {event.type for event in events}
    after = (
        await ws_turn(
            connection,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18 C"}],
            previous_response_id=done.response.id,
            tools=[WEATHER],
            tool_choice="none",
            store=False,
            max_output_tokens=SHORT,
        )
    )[-1]
    assert after.type in ("response.completed", "response.incomplete"), after
    assert after.response.output_text.strip()


async def test_websocket_lanes_run_side_by_side(connection: Any) -> None:
    for lane in ("a", "b"):
        await connection.response.create(
            model=MODEL,
            input=f"Lane {lane}: say hi.",
            store=False,
            max_output_tokens=8,
            stream_id=lane,
        )
    finished: dict[str, str] = {}
    while len(finished) < 2:
        event = await asyncio.wait_for(connection.recv(), 60.0)
        if event.type in TERMINAL:
            finished[event.stream_id] = event.type
    assert set(finished) == {"a", "b"}
    assert set(finished.values()) <= {"response.completed", "response.incomplete"}


# -- the default output cap ------------------------------------------------------------------------------


def test_no_max_output_tokens_is_capped_by_the_default(llama: LlamaServer, tmp_path: Path) -> None:
    """A client that sets no limit: the engine's default applies and the answer is incomplete with reason
    max_output_tokens, as the hosted API reports it (not minutes of generation until the context fills)."""
    server = gateway(llama, tmp_path, "--engine-option", "default_max_output_tokens=12", *DIALECT)
    try:
        with make_client(server.base_url) as client:
            response = client.responses.create(
                model=MODEL, input="Write a long story about a dragon and a knight, with many chapters."
            )
        assert response.status == "incomplete"
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
        assert response.max_output_tokens is None  # the client's own (absent) limit is what is echoed
        assert response.usage is not None and response.usage.output_tokens == 12
    finally:
        server.stop()


PREFIX_MATCH = re.compile(r"Llama\.generate: (\d+) prefix-match hit, remaining (\d+) prompt tokens to eval")


async def test_a_chained_websocket_turn_reuses_the_upstreams_prompt_cache(
    connection: Any, llama: LlamaServer
) -> None:
    """llama-cpp-python keeps one prompt cache and logs how much of each prompt it found there. Over
    WebSocket mode (store=false, only the new items sent), every later turn's prompt starts with the whole
    previous prompt, as the gateway renders the items the server kept: the server finds it in its cache and
    evaluates only the new tokens. Nothing the gateway sends for itself in between (the dialect's
    one-token prompt-count probe) evicts it: every request the turn made found at least that prefix."""
    turns = [
        ("Weather in Lima, then the time in Tokyo?", WEATHER),
        (None, TIME),
        (None, WEATHER),
    ]
    previous: Any = None
    for text, tool in turns:
        new: Any = text
        if previous is not None:
            call = call_of(previous)
            new = [{"type": "function_call_output", "call_id": call.call_id, "output": "18 C, clear sky"}]
        seen = len(llama.log_text())
        fields: dict[str, Any] = {"tools": [WEATHER, TIME], "store": False}
        if previous is not None:
            fields["previous_response_id"] = previous.id
        done = (
            await ws_turn(
                connection, input=new, tool_choice={"type": "function", "name": tool["name"]}, **fields
            )
        )[-1]
        assert done.type == "response.completed", done
        hits = [(int(hit), int(left)) for hit, left in PREFIX_MATCH.findall(llama.log_text()[seen:])]
        assert hits, "the server logged no prompt-cache lookup"
        prompt = done.response.usage.input_tokens
        assert hits[0][0] + hits[0][1] == prompt  # the turn's request: the server's count of its prompt
        if previous is not None:
            before = previous.usage.input_tokens
            # the previous prompt, all of it (a token at the seam may be split differently), came from cache
            assert all(hit >= before - 2 for hit, _ in hits), (hits, before)
            assert hits[0][1] <= prompt - before + 2, (hits, before, prompt)
        previous = done.response
