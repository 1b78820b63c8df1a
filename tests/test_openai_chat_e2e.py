"""End to end: a real loopwire server (in-process uvicorn) with the openai-chat engine in front of a fake
upstream replaying vLLM, llama.cpp and Ollama streams, driven by the official `openai` SDK over HTTP and
WebSocket mode. Asserts the events and, for continuations, the full history the upstream received."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn
from conftest import ServerProcess
from fake_chat_upstream import FakeUpstream
from openai.resources.responses.responses import AsyncResponsesConnection as Connection
from test_sdk_http import check_typed_stream

from loopwire.engines.openai_chat import OpenAIChatEngine, OpenAIChatSettings
from loopwire.server.app import LoopwireApp
from loopwire.server.coalesce import CoalescingHttpToolsProtocol, CoalescingWebSocketProtocol
from loopwire.server.state import ServerState
from loopwire.store.memory import MemoryStore

TERMINAL = {"response.completed", "response.failed", "response.incomplete", "error"}
WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
}


@dataclass
class Stack:
    upstream: FakeUpstream
    base_url: str


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    upstream = await FakeUpstream().start()
    settings = OpenAIChatSettings(
        upstreams=(upstream.base_url,), connect_timeout_s=1.0, first_byte_timeout_s=2.0, idle_timeout_s=0.5
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def state() -> ServerState:
        return ServerState(engine=OpenAIChatEngine(settings), store=MemoryStore())

    server = uvicorn.Server(
        uvicorn.Config(
            LoopwireApp(state),
            host="127.0.0.1",
            port=port,
            http=CoalescingHttpToolsProtocol,
            ws=CoalescingWebSocketProtocol,
            lifespan="on",
            log_level="error",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 -- uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    yield Stack(upstream, f"http://127.0.0.1:{port}/v1")
    server.should_exit = True
    await task
    await upstream.close()


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=stack.base_url, api_key="test", max_retries=0, timeout=10.0)
    yield sdk
    await sdk.close()


async def ws_turn(connection: Connection, **fields: Any) -> list[Any]:
    await connection.response.create(**fields)
    events: list[Any] = []
    while True:
        event = await asyncio.wait_for(connection.recv(), 5.0)
        events.append(event)
        if event.type in TERMINAL:
            return events


async def test_http_streamed_text_turn_and_a_stored_continuation(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    stream = await client.responses.create(model="vllm_text", input="What colour is the sky?", stream=True)
    events = [event async for event in stream]
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(deltas) == "The sky is blue."
    assert [event.sequence_number for event in events] == list(range(len(events)))
    first = events[-1].response
    assert first.output_text == "The sky is blue."
    assert first.usage is not None
    assert (first.usage.input_tokens, first.usage.output_tokens) == (31, 6)
    assert first.usage.input_tokens_details.cached_tokens == 16

    # over HTTP the history comes back from the store; the upstream still gets all of it, every turn
    second = await client.responses.create(
        model="ollama_text", input="And your name?", previous_response_id=first.id, instructions="Be brief."
    )
    assert second.status == "completed" and second.output_text == "My name is Qwen."
    assert stack.upstream.bodies()[-1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What colour is the sky?"},
        {"role": "assistant", "content": "The sky is blue."},
        {"role": "user", "content": "And your name?"},
    ]


async def test_websocket_tool_calls_then_a_continuation_with_the_outputs(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    async with client.responses.connect() as connection:
        events = await ws_turn(
            connection,
            model="vllm_tool_calls",
            input="Weather in Paris for 3 days and Oslo tomorrow?",
            instructions="Use the tools.",
            tools=[WEATHER],
            store=False,
        )
        done = events[-1]
        assert done.type == "response.completed", done
        calls = [item for item in done.response.output if item.type == "function_call"]
        assert [(call.call_id, call.name, call.arguments) for call in calls] == [
            ("chatcmpl-tool-6c1d0f6ea0a54d2a9a1f3a2e8f0b7c41", "get_weather", '{"city": "Paris", "days": 3}'),
            ("chatcmpl-tool-0e5b8d2c7f1a4b3d9c6e4a2f8b1d7c95", "get_weather", '{"city": "Oslo", "days": 1}'),
        ]
        argument_deltas = [
            event for event in events if event.type == "response.function_call_arguments.delta"
        ]
        assert argument_deltas, "the arguments were streamed"

        outputs = [
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C, sunny"},
            {"type": "function_call_output", "call_id": calls[1].call_id, "output": "9C, rain"},
        ]
        events = await ws_turn(
            connection,
            model="llamacpp_text",
            input=outputs,
            previous_response_id=done.response.id,
            tools=[WEATHER],
            store=False,
        )
        assert events[-1].type == "response.completed", events[-1]
        assert events[-1].response.output_text == "Hello there!"

    first, second = stack.upstream.bodies()
    assert first["messages"][0] == {"role": "system", "content": "Use the tools."}
    assert second["messages"] == [  # instructions are not inherited; the whole history is sent
        {"role": "user", "content": "Weather in Paris for 3 days and Oslo tomorrow?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in calls
            ],
        },
        {"role": "tool", "tool_call_id": calls[0].call_id, "content": "18C, sunny"},
        {"role": "tool", "tool_call_id": calls[1].call_id, "content": "9C, rain"},
    ]
    assert second["tools"][0]["function"]["name"] == "get_weather"
    cache_keys = {received.headers["X-Loopwire-Cache-Key"] for received in stack.upstream.received}
    assert len(cache_keys) == 1  # one lane, one key, one replica


async def test_an_upstream_failure_fails_the_turn_and_evicts_its_parent(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    async with client.responses.connect() as connection:
        first = (await ws_turn(connection, model="ollama_text", input="hi", store=False))[-1]
        assert first.type == "response.completed"

        events = await ws_turn(
            connection,
            model="vllm_text@drop3",
            input="go on",
            previous_response_id=first.response.id,
            store=False,
        )
        failed = events[-1]
        assert failed.type == "response.failed"
        assert failed.response.error.code == "server_error"  # the SDK's vocabulary; ours is in the message
        assert "[upstream_error]" in failed.response.error.message
        assert "response.output_text.delta" in {event.type for event in events}  # output had begun

        retry = (
            await ws_turn(
                connection,
                model="ollama_text",
                input="again",
                previous_response_id=first.response.id,
                store=False,
            )
        )[-1]
        assert retry.type == "error" and retry.error.code == "previous_response_not_found"

        timeout = (await ws_turn(connection, model="vllm_text@stall3", input="slow", store=False))[-1]
        assert timeout.type == "response.failed" and timeout.response.error.code == "server_error"
        assert "[upstream_timeout]" in timeout.response.error.message

        fresh = (await ws_turn(connection, model="llamacpp_text", input="fresh", store=False))[-1]
        assert fresh.type == "response.completed"

    failed_http = await client.responses.create(model="http500", input="hello")
    assert failed_http.status == "failed"
    assert failed_http.error is not None and failed_http.error.code == "server_error"
    assert "[upstream_error]" in failed_http.error.message
    assert "HTTP 500" in failed_http.error.message


async def test_an_upstream_context_overflow_fails_the_turn_with_context_length_exceeded(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    """llama-server's refusal of a prompt past its context reaches the client with the code the hosted API
    fails a streamed response with (and clients key on), over SSE, JSON and WebSocket mode; the lane's
    parent is evicted as after any failure."""
    overflow = "Your input exceeds the context window of this model (4476 tokens > 4096)."
    stream = await client.responses.create(model="overflow_llamaserver", input="a long input", stream=True)
    events = [event async for event in stream]
    assert [event.type for event in events] == ["response.created", "response.in_progress", "response.failed"]
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.code == "context_length_exceeded"
    assert failed.error.message.startswith(overflow)

    answered = await client.responses.create(model="overflow_vllm", input="a long input")
    assert answered.status == "failed" and answered.error is not None
    assert answered.error.code == "context_length_exceeded"
    assert "(5000 tokens > 4096)" in answered.error.message

    async with client.responses.connect() as connection:
        first = (await ws_turn(connection, model="ollama_text", input="hi", store=False))[-1]
        refused = (
            await ws_turn(
                connection,
                model="overflow_llamacpppython",
                input="more",
                previous_response_id=first.response.id,
                store=False,
            )
        )[-1]
        assert refused.type == "response.failed"
        assert refused.response.error.code == "context_length_exceeded"
        assert "(2300 tokens > 2048)" in refused.response.error.message
    assert len(stack.upstream.received) == 4  # one request per turn: no replay, no retry without the cap


async def test_the_command_line_puts_loopwire_in_front_of_an_upstream(tmp_path: Path) -> None:
    """`loopwire serve --engine openai-chat --upstream URL` as a user runs it, in its own process."""
    upstream = await FakeUpstream().start()
    server = ServerProcess(
        "memory",
        tmp_path / "server.log",
        (
            "--engine",
            "openai-chat",
            "--upstream",
            upstream.base_url,
            "--engine-option",
            "first_byte_timeout_s=5",
        ),
    )
    try:
        await asyncio.to_thread(server.start)
        sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0, timeout=10.0)
        first = await sdk.responses.create(model="vllm_text", input="hello upstream")
        assert first.status == "completed" and first.output_text
        async with sdk.responses.connect() as connection:
            await connection.response.create(
                model="llamacpp_text", input="and again", previous_response_id=first.id
            )
            async for event in connection:
                if event.type in ("response.completed", "response.failed", "error"):
                    assert event.type == "response.completed"
                    break
        sent = upstream.bodies()[-1]["messages"]
        assert [message["role"] for message in sent] == ["user", "assistant", "user"]  # the history went up
        await sdk.close()
    finally:
        await asyncio.to_thread(server.stop)
        await upstream.close()


# -- the vocabulary through a chat upstream: reasoning, custom and namespaced tools, text.format ---------

CRM_NAMESPACE: dict[str, Any] = {
    "type": "namespace",
    "name": "crm",
    "description": "Customer records.",
    "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
}
PATCH_TOOL: dict[str, Any] = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files.",
    "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch" /(.|\\n)*/'},
}


async def test_reasoning_content_becomes_a_reasoning_item(stack: Stack, client: openai.AsyncOpenAI) -> None:
    stream = await client.responses.create(model="vllm_reasoning", input="Say hello.", stream=True)
    events = [event async for event in stream]
    check_typed_stream(events)
    types = [event.type for event in events]
    assert "response.reasoning_text.delta" in types and "response.reasoning_text.done" in types
    response = events[-1].response
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text == "The user wants a greeting."
    assert message.type == "message" and response.output_text == "Hello!"
    assert response.usage is not None and response.usage.output_tokens_details.reasoning_tokens == 5


async def test_custom_and_namespaced_tools_through_a_chat_upstream(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    tools = [WEATHER, CRM_NAMESPACE, PATCH_TOOL, {"type": "web_search"}]
    first = await client.responses.create(
        model="vllm_namespaced_custom_calls",
        input="Fix it.",
        tools=tools,  # type: ignore[arg-type]
    )
    sent = stack.upstream.bodies()[-1]
    offered = {tool["function"]["name"]: tool["function"] for tool in sent["tools"]}
    assert set(offered) == {"get_weather", "crm__lookup", "apply_patch"}  # the hosted tool is not offered
    assert offered["apply_patch"]["parameters"]["properties"] == {"input": {"type": "string"}}
    assert "*** Begin Patch" in offered["apply_patch"]["description"]
    assert [tool.to_dict() for tool in first.tools] == [{**WEATHER, "strict": None}, *tools[1:]]
    lookup, patch = first.output
    assert (lookup.type, lookup.name, lookup.namespace, lookup.arguments) == (
        "function_call",
        "lookup",
        "crm",
        '{"cmd": "acme"}',
    )
    assert (patch.type, patch.name) == ("custom_tool_call", "apply_patch")
    assert patch.input == "*** Begin Patch\n*** Add File: hello.txt\n+hi\n*** End Patch\n"

    await client.responses.create(
        model="vllm_text",
        previous_response_id=first.id,
        tools=tools,  # type: ignore[arg-type]
        input=[
            {"type": "function_call_output", "call_id": lookup.call_id, "output": "ACME Corp"},
            {"type": "custom_tool_call_output", "call_id": patch.call_id, "output": "Done!"},
        ],
    )
    messages = stack.upstream.bodies()[-1]["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": lookup.call_id,
                "type": "function",
                "function": {"name": "crm__lookup", "arguments": '{"cmd": "acme"}'},
            },
            {
                "id": patch.call_id,
                "type": "function",
                "function": {"name": "apply_patch", "arguments": json.dumps({"input": patch.input})},
            },
        ],
    }
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": lookup.call_id, "content": "ACME Corp"},
        {"role": "tool", "tool_call_id": patch.call_id, "content": "Done!"},
    ]


async def test_json_schema_text_format_is_sent_as_response_format(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    await client.responses.create(
        model="vllm_text",
        input="json please",
        text={"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}},
    )
    assert stack.upstream.bodies()[-1]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": True},
    }


async def test_models_are_the_upstreams(stack: Stack, client: openai.AsyncOpenAI) -> None:
    listed = [model.id async for model in client.models.list()]
    assert "vllm_text" in listed and "ollama_tool_calls" in listed
    assert (await client.models.retrieve("any-name-the-client-sends")).id == "any-name-the-client-sends"


async def _three_turns(stack: Stack, client: openai.AsyncOpenAI, mode: str) -> list[bytes]:
    """One conversation (a user message; two calls; their outputs; a text answer; a follow-up) sent as
    `mode`: "full" resends every item with store=false; "chained" sends the new items after
    previous_response_id over HTTP with store=true; "ws" does so over WebSocket mode with store=false.
    Returns the raw bodies the upstream received for it."""
    start = len(stack.upstream.received)
    turns: list[tuple[str, list[dict[str, Any]]]] = [
        ("vllm_tool_calls", [{"role": "user", "content": "Weather in Paris for 3 days and Oslo tomorrow?"}]),
        ("llamacpp_text", []),  # the call outputs, once the calls are known
        ("ollama_text", [{"role": "user", "content": "And your name?"}]),
    ]
    history: list[dict[str, Any]] = []
    previous: str | None = None
    async with client.responses.connect() as connection:
        for model, new in turns:
            if not new:
                calls = [item for item in history if item.get("type") == "function_call"]
                new = [
                    {"type": "function_call_output", "call_id": call["call_id"], "output": f"{i}C, sunny"}
                    for i, call in enumerate(calls)
                ]
            fields: dict[str, Any] = {"model": model, "instructions": "Use the tools.", "tools": [WEATHER]}
            if mode == "full":
                fields.update(input=[*history, *new], store=False)
            else:
                fields.update(input=new, store=mode == "chained")
                if previous is not None:
                    fields["previous_response_id"] = previous
            if mode == "ws":
                done = (await ws_turn(connection, **fields))[-1]
                assert done.type == "response.completed", done
                response = done.response
            else:
                response = await client.responses.create(**fields)
            assert response.status == "completed", response.error
            history += [*new, *(item.model_dump(exclude_none=True) for item in response.output)]
            previous = response.id
    return [received.raw for received in stack.upstream.received[start:]]


async def test_a_chained_conversation_sends_the_upstream_the_bytes_a_full_resend_sends(
    stack: Stack, client: openai.AsyncOpenAI
) -> None:
    """The items the server kept (its own output items, the inputs before them) are rendered exactly as
    the same items resent by the client, over HTTP and WebSocket mode: an upstream's prompt cache (one
    exact prefix, as llama.cpp's) then serves a chained turn as it serves a resent one. And every turn's
    messages extend the previous turn's unchanged, so that prefix is there to reuse."""
    full = await _three_turns(stack, client, "full")
    chained = await _three_turns(stack, client, "chained")
    ws = await _three_turns(stack, client, "ws")
    assert len(full) == 3
    assert chained == full
    assert ws == full
    messages = [json.loads(body)["messages"] for body in full]
    for earlier, later in itertools.pairwise(messages):
        assert later[: len(earlier)] == earlier
        assert len(later) > len(earlier)
