"""Long conversations past the model's context window, with the official `openai` SDK over HTTP and WebSocket
mode against a real `loopwire serve --sim-context-window N`: 200-turn agent loops (a forced tool call and its
output every turn) run to the end with `truncation: "auto"` and with `context_management` compaction, the
input never above the window; without either, the turn that overflows is a 400 `context_length_exceeded`
(param `input`) and the server keeps serving."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import ServerProcess, make_async_client, make_client
from openai.types.responses import ResponseCompactionItem, ResponseFunctionToolCall, ResponseStreamEvent
from sdk_types import classes_by_type
from test_sdk_websocket import check_event

SSE_EVENT_CLASSES = classes_by_type(ResponseStreamEvent)
WINDOW = 1_200
TURNS = 200
THRESHOLD = 800
MODEL = "sim-agent"
READ_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "read_file",
    "description": "Read a file of the repository.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
}
FIRST_TASK = "Fix the failing test in the repository."


def file_text(turn: int) -> str:
    """A tool output of ~60 words: a few turns fill the window."""
    return f"# file {turn}\n" + " ".join(f"line{turn}_{n} = value({n})" for n in range(20))


@pytest.fixture(scope="module")
def windowed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("windowed")
    proc = ServerProcess(
        f"sqlite:{directory / 'db'}", directory / "server.log", ("--sim-context-window", str(WINDOW))
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


def only_call(response: Any) -> ResponseFunctionToolCall:
    calls = [item for item in response.output if isinstance(item, ResponseFunctionToolCall)]
    assert len(calls) == 1, response.output
    return calls[0]


def compactions(response: Any) -> list[ResponseCompactionItem]:
    found = [item for item in response.output if item.type == "compaction"]
    assert all(isinstance(item, ResponseCompactionItem) for item in found)
    return found  # type: ignore[return-value]


def agent_over_http(server: ServerProcess, turns: int, **fields: Any) -> list[Any]:
    """An agent loop chained by previous_response_id over HTTP (stored): each turn answers the last call."""
    responses: list[Any] = []
    with make_client(server.base_url, strict=True) as client:
        response = client.responses.create(
            model=MODEL, input=FIRST_TASK, tools=[READ_TOOL], tool_choice="required", **fields
        )
        responses.append(response)
        for turn in range(1, turns):
            call = only_call(response)
            response = client.responses.create(
                model=MODEL,
                previous_response_id=response.id,
                input=[{"type": "function_call_output", "call_id": call.call_id, "output": file_text(turn)}],
                tools=[READ_TOOL],
                tool_choice="required",
                **fields,
            )
            responses.append(response)
    return responses


async def agent_over_ws(
    server: ServerProcess,
    turns: int,
    *,
    model: str = MODEL,
    tools: list[Any] | None = None,
    tool_choice: Any = "required",
    output: Callable[[int], str] = file_text,
    turn_timeout_s: float = 10.0,
    turn_seconds: list[float] | None = None,
    **fields: Any,
) -> list[Any]:
    """The same loop in WebSocket mode with store=false: continuation from the connection's cache only.
    `output(turn)` is the tool output each turn answers the last call with; `turn_seconds`, when given,
    gets each turn's wall time (request sent to terminal event)."""
    responses: list[Any] = []
    client = make_async_client(server.base_url)
    if turn_timeout_s > 20.0:  # the client's own timeout stays the suite's default for short turns
        client = client.with_options(timeout=turn_timeout_s)
    try:
        async with client.responses.connect() as conn:
            previous: Any = None
            for turn in range(turns):
                body: dict[str, Any] = {
                    "model": model,
                    "tools": [READ_TOOL] if tools is None else tools,
                    "tool_choice": tool_choice,
                }
                if previous is None:
                    body["input"] = FIRST_TASK
                else:
                    call = only_call(previous)
                    body["previous_response_id"] = previous.id
                    body["input"] = [
                        {"type": "function_call_output", "call_id": call.call_id, "output": output(turn)}
                    ]
                started = time.perf_counter()
                await conn.response.create(store=False, **body, **fields)
                while True:
                    event = await asyncio.wait_for(conn.recv(), turn_timeout_s)
                    check_event(event)
                    assert event.type != "error", event
                    if event.type in ("response.completed", "response.failed", "response.incomplete"):
                        break
                assert event.type == "response.completed", event
                if turn_seconds is not None:
                    turn_seconds.append(time.perf_counter() - started)
                previous = event.response
                responses.append(previous)
    finally:
        await client.close()
    return responses


def check_within_window(responses: list[Any]) -> None:
    assert len(responses) == TURNS
    for response in responses:
        assert response.status == "completed"
        assert response.usage is not None and response.usage.input_tokens <= WINDOW
        only_call(response)


def test_truncation_auto_runs_200_turns_over_http(windowed: ServerProcess) -> None:
    responses = agent_over_http(windowed, TURNS, truncation="auto")
    check_within_window(responses)
    assert all(response.truncation == "auto" for response in responses)
    # the window was really reached: late turns sit between three quarters of it (less one turn) and all of it
    late = [response.usage.input_tokens for response in responses[-50:]]
    assert min(late) > WINDOW * 0.6
    assert not any(compactions(response) for response in responses)


async def test_truncation_auto_runs_200_turns_over_websocket(windowed: ServerProcess) -> None:
    responses = await agent_over_ws(windowed, TURNS, truncation="auto")
    check_within_window(responses)
    assert min(response.usage.input_tokens for response in responses[-50:]) > WINDOW * 0.6
    # truncating to three quarters leaves room: most late turns extend a prefix the engine has cached
    reused = [response.usage.input_tokens_details.cached_tokens for response in responses[-50:]]
    assert sum(1 for tokens in reused if tokens > WINDOW // 2) > 35, reused


def check_compacted(responses: list[Any]) -> None:
    check_within_window(responses)
    compacted = [index for index, response in enumerate(responses) if compactions(response)]
    assert len(compacted) >= 5, "the threshold was passed many times in 200 turns"
    for index in compacted:
        response = responses[index]
        assert response.output[0].type == "compaction", "the compaction leads the output"
        assert response.output[0].encrypted_content.startswith("lw2:")
        assert response.usage.input_tokens <= THRESHOLD
        # the turn before it had passed the threshold's worth of context; the compacted one is smaller
        assert responses[index - 1].usage.input_tokens > response.usage.input_tokens
    for response in responses:
        assert response.usage.input_tokens <= THRESHOLD + 200, "compaction keeps the input near the threshold"


COMPACTION = [{"type": "compaction", "compact_threshold": THRESHOLD}]


def test_server_side_compaction_runs_200_turns_over_http(windowed: ServerProcess) -> None:
    check_compacted(agent_over_http(windowed, TURNS, context_management=COMPACTION))


async def test_server_side_compaction_runs_200_turns_over_websocket(windowed: ServerProcess) -> None:
    check_compacted(await agent_over_ws(windowed, TURNS, context_management=COMPACTION))


def test_without_truncation_the_overflowing_turn_is_a_400_and_the_server_keeps_serving(
    windowed: ServerProcess,
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        agent_over_http(windowed, TURNS)
    error = refused.value
    assert error.status_code == 400
    assert error.code == "context_length_exceeded"
    assert error.param == "input"
    body = error.body
    assert isinstance(body, dict) and body["type"] == "invalid_request_error"
    with make_client(windowed.base_url) as client:
        assert client.responses.create(model=MODEL, input="still there?").status == "completed"
    with urllib.request.urlopen(windowed.origin + "/metrics", timeout=10) as reply:
        metrics = reply.read().decode()
    assert 'loopwire_context_fits_total{result="refused"}' in metrics


async def test_without_truncation_the_overflowing_ws_turn_is_an_error_event_and_the_socket_stays(
    windowed: ServerProcess,
) -> None:
    client = make_async_client(windowed.base_url)
    big = " ".join(f"word{n}" for n in range(WINDOW * 2))
    try:
        async with client.responses.connect() as conn:
            await conn.response.create(model=MODEL, input=big, store=False)
            event = await asyncio.wait_for(conn.recv(), 10.0)
            check_event(event)
            assert event.type == "error"
            assert event.error.code == "context_length_exceeded"
            assert event.error.param == "input"
            assert event.status == 400
            # a single input larger than the window cannot be truncated either
            await conn.response.create(model=MODEL, input=big, store=False, truncation="auto")
            event = await asyncio.wait_for(conn.recv(), 10.0)
            assert event.type == "error" and event.error.code == "context_length_exceeded"
            # the socket keeps serving
            await conn.response.create(model=MODEL, input="small", store=False)
            while (event := await asyncio.wait_for(conn.recv(), 10.0)).type != "response.completed":
                assert event.type != "error", event
    finally:
        await client.close()


def test_stateless_resend_is_truncated_every_turn(windowed: ServerProcess) -> None:
    """store=false with the whole history resent (no previous_response_id): the server truncates what it
    is sent, every turn, and the client's history stays whole on its side."""
    history: list[Any] = [{"role": "user", "content": FIRST_TASK}]
    with make_client(windowed.base_url) as client:
        for turn in range(40):
            response = client.responses.create(
                model=MODEL,
                input=history,
                tools=[READ_TOOL],
                tool_choice="required",
                store=False,
                truncation="auto",
            )
            assert response.usage is not None and response.usage.input_tokens <= WINDOW
            call = only_call(response)
            history += [item.to_dict() for item in response.output]
            history.append(
                {"type": "function_call_output", "call_id": call.call_id, "output": file_text(turn)}
            )
    assert json.dumps(history).count("function_call_output") == 40


def test_gateways_take_a_context_window_option(tmp_path: Path) -> None:
    """`--context-window` reaches the gateway engines; the sim takes `--sim-context-window` only."""
    from loopwire.cli import build_parser, config_from_args

    args = build_parser().parse_args(
        [
            "serve",
            "--engine",
            "openai-chat",
            "--upstream",
            "http://127.0.0.1:9/v1",
            "--context-window",
            "8192",
        ]
    )
    config = config_from_args(args)
    assert config.engine_options["context_window"] == "8192"
    from loopwire.engines.factory import build_engine

    engine = build_engine("openai-chat", **config.engine_options)
    assert getattr(engine, "context_window", None) == 8192
    with pytest.raises(ValueError, match="--context-window"):
        config_from_args(build_parser().parse_args(["serve", "--context-window", "8192"]))


def test_a_compaction_streams_as_the_first_output_item_over_sse(windowed: ServerProcess) -> None:
    """stream=true: the compaction item is announced (added, done) before the model's output, and the
    completed response lists it first; every event is the SDK's typed class."""
    with make_client(windowed.base_url, strict=True) as client:
        first = client.responses.create(model=MODEL, input=" ".join(f"fact{n}" for n in range(400)))
        events = list(
            client.responses.create(
                model=MODEL,
                previous_response_id=first.id,
                input="Summarise what you know.",
                context_management=[{"type": "compaction", "compact_threshold": 300}],
                stream=True,
            )
        )
    for event in events:
        expected = SSE_EVENT_CLASSES[event.type]
        assert type(event) is expected, event.type
        expected.model_validate(event.to_dict(mode="json", exclude_unset=True, warnings=False))
    types = [event.type for event in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
    ]
    assert events[2].item.type == "compaction" and events[3].item.type == "compaction"
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output[0].type == "compaction"
    assert completed.response.output[1].type == "message"
    assert completed.response.usage.input_tokens <= 300
