"""End to end: a real `loopwire serve --engine local --model DIR` process on the tiny fixture models,
driven by the official `openai` SDK over HTTP (JSON and SSE) and WebSocket mode."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import WEATHER_PARAMETERS, WEATHER_PROMPT, ServerProcess, make_async_client, make_client

pytest.importorskip("torch")
pytest.importorskip("transformers")

TERMINAL = {"response.completed", "response.failed", "response.incomplete", "error"}
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city.",
    "parameters": WEATHER_PARAMETERS,
}


def start(directory: Path, model_dir: Path, name: str) -> ServerProcess:
    extra = ("--engine", "local", "--model", str(model_dir))
    # importing torch and loading the model takes seconds, more on a busy 2-core machine
    return ServerProcess("memory", directory / f"{name}.log", extra, ready_timeout_s=120.0).start()


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory, local_model_dir: Path) -> Iterator[ServerProcess]:
    proc = start(tmp_path_factory.mktemp("local-server"), local_model_dir, "random")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def taught_server(
    tmp_path_factory: pytest.TempPathFactory, taught_model_dir: Path
) -> Iterator[ServerProcess]:
    proc = start(tmp_path_factory.mktemp("taught-server"), taught_model_dir, "taught")
    try:
        yield proc
    finally:
        proc.stop()


def test_http_text_turn_json_and_sse(local_server: ServerProcess) -> None:
    with make_client(local_server.base_url, strict=True) as client:
        response = client.responses.create(model="tiny", input="Hello there.", max_output_tokens=6)
        assert response.status == "incomplete" and response.incomplete_details is not None
        assert response.usage is not None and response.usage.output_tokens == 6
        assert response.usage.input_tokens > 10 and response.usage.input_tokens_details.cached_tokens == 0
        counted = client.responses.input_tokens.count(model="tiny", input="Hello there.")
        assert counted.input_tokens == response.usage.input_tokens
        events = list(
            client.responses.create(model="tiny", input="Hello there.", max_output_tokens=6, stream=True)
        )
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.incomplete"
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == response.output_text  # greedy: the same tokens as the JSON turn


async def test_websocket_continuation_reuses_the_lane_kv_cache(local_server: ServerProcess) -> None:
    client = make_async_client(local_server.base_url)
    try:
        async with client.responses.connect() as conn:
            first = await ws_turn(conn, input="List the files, please.", store=False, max_output_tokens=8)
            second = await ws_turn(
                conn,
                input="And now the README, please.",
                store=False,
                max_output_tokens=8,
                previous_response_id=first["id"],
            )
    finally:
        await client.close()
    u1, u2 = first["usage"], second["usage"]
    assert u1["input_tokens_details"]["cached_tokens"] == 0
    # at least the whole first prompt comes from the lane's KV cache
    assert u2["input_tokens_details"]["cached_tokens"] >= u1["input_tokens"]
    assert u2["input_tokens"] > u1["input_tokens"] + 5


async def test_websocket_tool_call_from_a_taught_model(taught_server: ServerProcess) -> None:
    client = make_async_client(taught_server.base_url)
    try:
        async with client.responses.connect() as conn:
            first = await ws_turn(conn, input=WEATHER_PROMPT, tools=[WEATHER_TOOL], max_output_tokens=60)
            calls = [item for item in first["output"] if item["type"] == "function_call"]
            assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
                ("get_weather", {"city": "Paris"})
            ]
            second = await ws_turn(
                conn,
                input=[{"type": "function_call_output", "call_id": calls[0]["call_id"], "output": "Sunny."}],
                tools=[WEATHER_TOOL],
                max_output_tokens=4,
                previous_response_id=first["id"],
            )
    finally:
        await client.close()
    u1, u2 = first["usage"], second["usage"]
    # the call re-renders as the tokens the model generated: prompt and call all come from the cache
    assert u2["input_tokens_details"]["cached_tokens"] == u1["input_tokens"] + u1["output_tokens"] - 1


async def ws_turn(conn: Any, **fields: Any) -> dict[str, Any]:
    await conn.response.create(model="tiny", **fields)
    while True:
        event = await asyncio.wait_for(conn.recv(), 60)
        if event.type in TERMINAL:
            assert event.type != "error", event
            response: dict[str, Any] = event.response.model_dump()
            return response


def test_http_continuation_without_a_lane_cache_prefills_everything(local_server: ServerProcess) -> None:
    with make_client(local_server.base_url) as client:
        first = client.responses.create(model="tiny", input="Hello.", max_output_tokens=4)
        second = client.responses.create(
            model="tiny", input="Again.", max_output_tokens=4, previous_response_id=first.id
        )
    assert second.usage is not None and second.usage.input_tokens_details.cached_tokens == 0
    assert isinstance(second, openai.types.responses.Response)
