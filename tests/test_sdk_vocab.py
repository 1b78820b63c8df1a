"""The whole tool and item vocabulary of the Responses API, through a real `loopwire serve`, with the
official SDK's strict types: every tool type echoed exactly as sent, unknown tool types and fields accepted,
malformed known tools and unknown item types refused with a 400 naming the field, Codex CLI's first frame."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from conftest import ServerProcess, make_async_client
from openai.resources.responses.responses import AsyncResponsesConnection as Connection
from openai.types.responses import ResponseCustomToolCall, ResponseFunctionToolCall, ResponseReasoningItem
from openai.types.responses.responses_server_event import ResponsesServerEvent
from sdk_types import classes_by_type
from test_sdk_http import check_typed_stream, collapse, raw_request

MODEL = "sim-model"
GATEWAY = os.environ.get("LOOPWIRE_TEST_ENGINE") == "responses"
"""The server under test is the responses engine in front of a second loopwire (tests/conftest.py)."""
RECV_TIMEOUT_S = 10.0
WS_EVENT_CLASSES = classes_by_type(ResponsesServerEvent)


def _function(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "description": f"The {name} tool.",
        "strict": False,
        "parameters": {
            "type": "object",
            "properties": {"cmd": {"type": "string"}},
            "required": ["cmd"],
            "additionalProperties": False,
        },
        **extra,
    }


APPLY_PATCH_GRAMMAR = (
    'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF\nend_patch: "*** End Patch" LF?\n'
    'hunk: add_hunk\nadd_hunk: "*** Add File: " filename LF add_line+\nfilename: /(.+)/\n'
    'add_line: "+" /(.*)/ LF -> line\n%import common.LF\n'
)

CODEX_TOOLS: list[dict[str, Any]] = [
    _function("exec_command"),
    _function("write_stdin"),
    _function("update_plan"),
    {
        "type": "custom",
        "name": "apply_patch",
        "description": "Use the `apply_patch` tool to edit files.",
        "format": {"type": "grammar", "syntax": "lark", "definition": APPLY_PATCH_GRAMMAR},
    },
    {
        "type": "namespace",
        "name": "multi_agent_v1",
        "description": "Tools to spawn and manage sub-agents.",
        "tools": [_function("spawn_agent"), _function("send_input"), _function("wait_agent")],
    },
    {"type": "web_search", "external_web_access": False},
    _function("view_image"),
    _function("list_mcp_resources"),
    _function("list_mcp_resource_templates"),
    _function("read_mcp_resource"),
    _function("request_user_input"),
    _function("js_repl"),
    _function("js_repl_reset"),
]
"""The 13 tools of Codex CLI 0.171's first frame, in its shapes: function tools, the freeform apply_patch
(a custom tool with a lark grammar), one namespace and a web_search tool with a field the SDK may not know."""

CODEX_FIRST_FRAME: dict[str, Any] = {
    "type": "response.create",
    "model": MODEL,
    "instructions": "You are Codex, a coding agent.",
    "input": [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "<permissions instructions>sandboxed</permissions>"}],
        },
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix the bug"}]},
    ],
    "tools": CODEX_TOOLS,
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "reasoning": {"summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "019af3c2-5b7e-7d21-a5c4-3c1f0d7f8e11",
    "client_metadata": {"x-codex-turn-metadata": '{"turn_id":"1","sandbox":"workspace-write"}'},
    "generate": False,
}


async def recv(conn: Connection) -> Any:
    event = await asyncio.wait_for(conn.recv(), RECV_TIMEOUT_S)
    expected = WS_EVENT_CLASSES.get(event.type)
    assert expected is not None and type(event) is expected, event
    return event


async def frame_turn(conn: Connection, frame: dict[str, Any]) -> list[Any]:
    await conn.send_raw(json.dumps(frame))  # type: ignore[attr-defined]
    events: list[Any] = []
    while True:
        event = await recv(conn)
        events.append(event)
        if event.type in ("response.completed", "response.failed", "response.incomplete", "error"):
            return events


@pytest.fixture
async def ws(async_client: openai.AsyncOpenAI) -> Any:
    async with async_client.responses.connect() as conn:
        yield conn


async def test_codex_first_frame_is_accepted_and_tools_echoed_exactly(ws: Connection) -> None:
    events = await frame_turn(ws, CODEX_FIRST_FRAME)
    assert [event.type for event in events] == ["response.created", "response.completed"], events[-1]
    response = events[-1].response
    echoed = [tool.to_dict(mode="json") for tool in response.tools]
    assert echoed == CODEX_TOOLS
    assert response.output == []
    assert response.prompt_cache_key == CODEX_FIRST_FRAME["prompt_cache_key"]
    # the warm-up chains: Codex's next frame continues from it with only the new input
    follow = dict(CODEX_FIRST_FRAME, generate=True, previous_response_id=response.id, input=[])
    follow.pop("generate")
    events = await frame_turn(ws, follow)
    assert events[-1].type == "response.completed", events[-1]
    assert [tool.to_dict(mode="json") for tool in events[-1].response.tools] == CODEX_TOOLS


def create_raw(base_url: str, body: dict[str, Any]) -> tuple[int, Any]:
    status, _, reply = raw_request(base_url, "POST", "/v1/responses", json.dumps(body).encode())
    return status, reply


def test_codex_first_frame_over_http_echoes_tools_exactly(base_url: str) -> None:
    body = {k: v for k, v in CODEX_FIRST_FRAME.items() if k not in ("type", "generate", "stream")}
    status, reply = create_raw(base_url, body)
    assert status == 200, reply
    assert reply["tools"] == CODEX_TOOLS
    assert reply["status"] == "completed"


# -- every tool type -------------------------------------------------------------------------------------

ALL_TOOLS: list[dict[str, Any]] = [
    _function("run", strict=True),
    {"type": "custom", "name": "apply_patch", "description": "Edit files.", "format": {"type": "text"}},
    {
        "type": "custom",
        "name": "sql",
        "format": {"type": "grammar", "syntax": "regex", "definition": "SELECT .+"},
    },
    {
        "type": "namespace",
        "name": "crm",
        "description": "Customer records.",
        "tools": [
            _function("lookup"),
            {"type": "custom", "name": "note", "description": "A free-text note."},
        ],
    },
    {"type": "web_search", "external_web_access": False},
    {"type": "web_search", "search_context_size": "low", "filters": {"allowed_domains": ["example.com"]}},
    {"type": "web_search_preview", "search_context_size": "medium"},
    {"type": "file_search", "vector_store_ids": ["vs_1"], "max_num_results": 5},
    {"type": "code_interpreter", "container": {"type": "auto", "file_ids": []}},
    {"type": "image_generation", "quality": "low", "size": "1024x1024"},
    {
        "type": "mcp",
        "server_label": "deepwiki",
        "server_url": "https://mcp.example/mcp",
        "require_approval": "never",
    },
    {"type": "computer_use_preview", "display_width": 1024, "display_height": 768, "environment": "browser"},
    {"type": "local_shell"},
    {"type": "shell"},
    {"type": "apply_patch"},
]
"""One of each tool type the SDK defines, with real fields (and a web_search field the SDK may not know)."""

FORWARD_TOOLS: list[dict[str, Any]] = [
    {"type": "hologram_projector", "resolution": {"w": 3, "h": 4}, "beta": True},
    _function("run2", defer_loading=True, brand_new_field={"nested": [1, 2]}),
    {"type": "mcp", "server_label": "x", "tunnel": {"future": "field"}},
]
"""What a client newer than this server may send: a tool type nobody has heard of, unknown fields."""


def test_every_tool_type_is_echoed_exactly_http(strict_client: openai.OpenAI) -> None:
    response = strict_client.responses.create(model=MODEL, input="hi", tools=ALL_TOOLS)  # type: ignore[arg-type]
    assert response.status == "completed"
    assert [tool.to_dict(mode="json") for tool in response.tools] == ALL_TOOLS


async def test_every_tool_type_is_echoed_exactly_ws(ws: Connection) -> None:
    frame = {"type": "response.create", "model": MODEL, "input": "hi", "tools": ALL_TOOLS}
    events = await frame_turn(ws, frame)
    assert events[-1].type == "response.completed", events[-1]
    for event in events:
        if hasattr(event, "response"):
            assert [tool.to_dict(mode="json") for tool in event.response.tools] == ALL_TOOLS


def test_unknown_tool_types_and_fields_accepted_and_echoed(base_url: str) -> None:
    status, reply = create_raw(base_url, {"model": MODEL, "input": "hi", "tools": FORWARD_TOOLS})
    assert status == 200, reply
    assert reply["tools"][0] == FORWARD_TOOLS[0]
    assert reply["tools"][1] == {**FORWARD_TOOLS[1]}
    assert reply["tools"][2] == FORWARD_TOOLS[2]
    # and it is kept for the chain: a continuation resends the tools and works
    status, later = create_raw(
        base_url,
        {"model": MODEL, "input": "again", "tools": FORWARD_TOOLS, "previous_response_id": reply["id"]},
    )
    assert status == 200, later


async def test_unknown_tool_type_over_ws_is_echoed(ws: Connection) -> None:
    frame = {"type": "response.create", "model": MODEL, "input": "hi", "tools": FORWARD_TOOLS}
    await ws.send_raw(json.dumps(frame))  # type: ignore[attr-defined]
    terminal: dict[str, Any] = {}
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv_bytes(), RECV_TIMEOUT_S))
        if event["type"] in ("response.completed", "error", "response.failed"):
            terminal = event
            break
    assert terminal["type"] == "response.completed", terminal
    assert terminal["response"]["tools"] == FORWARD_TOOLS


@pytest.mark.parametrize(
    ("tool", "param"),
    [
        ({"type": "function", "description": "no name"}, "tools[4].name"),
        ({"type": "function", "name": 7}, "tools[4].name"),
        ({"type": "custom"}, "tools[4].name"),
        ({"type": "namespace", "name": "ns"}, "tools[4].tools"),
        ({"type": "namespace", "name": "ns", "tools": [{"type": "function"}]}, "tools[4].tools[0].name"),
        ({"type": "mcp"}, "tools[4].server_label"),
        ({"type": "file_search"}, "tools[4].vector_store_ids"),
        (
            {"type": "computer_use_preview", "display_width": 1, "environment": "mac"},
            "tools[4].display_height",
        ),
        ({"type": 5}, "tools[4].type"),
        ({"name": "typeless"}, "tools[4].type"),
        ("a string", "tools[4]"),
    ],
)
def test_malformed_known_tool_is_400_naming_the_field(base_url: str, tool: Any, param: str) -> None:
    tools = [_function("a"), _function("b"), {"type": "web_search"}, {"type": "shell"}, tool]
    status, reply = create_raw(base_url, {"model": MODEL, "input": "hi", "tools": tools})
    assert status == 400, reply
    assert reply["error"]["param"] == param, reply
    assert reply["error"]["type"] == "invalid_request_error"


async def test_malformed_known_tool_over_ws_is_an_error_event(ws: Connection) -> None:
    frame = {"type": "response.create", "model": MODEL, "input": "hi", "tools": [{"type": "custom"}]}
    events = await frame_turn(ws, frame)
    assert events[-1].type == "error" and events[-1].status == 400
    assert events[-1].error.param == "tools[0].name"
    assert (await frame_turn(ws, {"type": "response.create", "model": MODEL, "input": "ok"}))[-1].type == (
        "response.completed"
    )


def test_hosted_tool_choice_is_refused_where_the_engine_cannot_run_it(client: openai.OpenAI) -> None:
    """The sim engine runs no hosted tool: a choice forcing one is a 400 naming the field. The responses
    engine passes it on, so the upstream decides (here a loopwire on the sim engine, which refuses it)."""
    fields: dict[str, Any] = {
        "model": MODEL,
        "input": "search",
        "tools": [{"type": "web_search_preview"}],
        "tool_choice": {"type": "web_search_preview"},
    }
    if GATEWAY:
        response = client.responses.create(**fields)
        assert response.status == "failed" and response.error is not None
        assert "web_search_preview" in response.error.message
        return
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(**fields)
    assert caught.value.body["param"] == "tool_choice.type"  # type: ignore[index]
    assert "web_search_preview" in caught.value.body["message"]  # type: ignore[index]


def test_allowed_tools_choice_narrows_what_the_model_calls(strict_client: openai.OpenAI) -> None:
    response = strict_client.responses.create(
        model=MODEL,
        input="do it",
        tools=ALL_TOOLS,  # type: ignore[arg-type]
        tool_choice={
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "custom", "name": "sql"}],
        },
    )
    calls = [item for item in response.output if item.type in ("function_call", "custom_tool_call")]
    assert calls and all(item.type == "custom_tool_call" and item.name == "sql" for item in calls)


# -- calls the model makes: custom, namespaced ------------------------------------------------------------


def _stream(client: openai.OpenAI, **fields: Any) -> list[Any]:
    with client.responses.create(model=MODEL, stream=True, **fields) as stream:
        events = list(stream)
    check_typed_stream(events)
    return events


def test_custom_tool_call_streams_its_input_and_round_trips(strict_client: openai.OpenAI) -> None:
    events = _stream(
        strict_client,
        input="patch it",
        tools=ALL_TOOLS,
        tool_choice={"type": "custom", "name": "apply_patch"},
    )
    types = [event.type for event in events]
    assert (
        "response.custom_tool_call_input.delta" in types and "response.custom_tool_call_input.done" in types
    )
    response = events[-1].response
    call = response.output[0]
    assert isinstance(call, ResponseCustomToolCall) and call.name == "apply_patch" and call.input
    done = next(e for e in events if e.type == "response.custom_tool_call_input.done")
    assert done.input == call.input and done.item_id == call.id
    follow = strict_client.responses.create(
        model=MODEL,
        previous_response_id=response.id,
        tools=ALL_TOOLS,  # type: ignore[arg-type]
        input=[{"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Done!"}],
    )
    assert follow.status == "completed"
    listed = strict_client.responses.input_items.list(follow.id, order="asc").data
    assert [item.type for item in listed][-2:] == ["custom_tool_call", "custom_tool_call_output"]


def test_call_inside_a_namespace_carries_it(strict_client: openai.OpenAI) -> None:
    response = strict_client.responses.create(
        model=MODEL,
        input="look up",
        tools=ALL_TOOLS,
        tool_choice={"type": "function", "name": "lookup"},  # type: ignore[arg-type]
    )
    call = response.output[0]
    assert isinstance(call, ResponseFunctionToolCall)
    assert call.name == "lookup" and call.namespace == "crm"
    custom = strict_client.responses.create(
        model=MODEL,
        input="note",
        tools=ALL_TOOLS,
        tool_choice={"type": "custom", "name": "note"},  # type: ignore[arg-type]
    )
    assert isinstance(custom.output[0], ResponseCustomToolCall) and custom.output[0].namespace == "crm"


async def test_custom_tool_call_over_ws_events_validate(ws: Connection) -> None:
    frame = {
        "type": "response.create",
        "model": MODEL,
        "input": "patch",
        "tools": ALL_TOOLS,
        "tool_choice": {"type": "custom", "name": "sql"},
    }
    events = await frame_turn(ws, frame)
    assert events[-1].type == "response.completed", events[-1]
    assert events[-1].response.output[0].type == "custom_tool_call"
    assert [e.sequence_number for e in events] == list(range(len(events)))


# -- every item type ---------------------------------------------------------------------------------------

EVERY_ITEM: list[dict[str, Any]] = [
    {"type": "message", "role": "developer", "content": "be brief"},
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]},
    {
        "type": "reasoning",
        "id": "rs_client_1",
        "summary": [{"type": "summary_text", "text": "plan the work"}],
        "encrypted_content": "opaque-from-another-server",
    },
    {
        "type": "function_call",
        "call_id": "c_fn",
        "name": "run",
        "arguments": '{"cmd": "ls"}',
        "namespace": "crm",
    },
    {"type": "function_call_output", "call_id": "c_fn", "output": "a b c"},
    {"type": "custom_tool_call", "call_id": "c_custom", "name": "apply_patch", "input": "*** Begin Patch"},
    {"type": "custom_tool_call_output", "call_id": "c_custom", "output": "Done"},
    {
        "type": "local_shell_call",
        "id": "lsc_1",
        "call_id": "c_local",
        "status": "completed",
        "action": {"type": "exec", "command": ["ls"], "env": {}},
    },
    {"type": "local_shell_call_output", "id": "lsc_1", "output": '{"stdout": "x"}'},
    {"type": "shell_call", "call_id": "c_shell", "action": {"commands": ["pwd"], "timeout_ms": 1000}},
    {
        "type": "shell_call_output",
        "call_id": "c_shell",
        "output": [{"stdout": "/", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}],
    },
    {
        "type": "apply_patch_call",
        "call_id": "c_patch",
        "status": "completed",
        "operation": {"type": "create_file", "path": "a.txt", "diff": "+hi\n"},
    },
    {"type": "apply_patch_call_output", "call_id": "c_patch", "status": "completed", "output": "ok"},
    {
        "type": "computer_call",
        "id": "cu_1",
        "call_id": "c_computer",
        "status": "completed",
        "pending_safety_checks": [],
        "action": {"type": "click", "button": "left", "x": 1, "y": 2},
    },
    {
        "type": "computer_call_output",
        "call_id": "c_computer",
        "output": {"type": "computer_screenshot", "image_url": "data:image/png;base64,iVBORw0KGgo="},
    },
    {
        "type": "mcp_list_tools",
        "id": "mcpl_1",
        "server_label": "deepwiki",
        "tools": [{"name": "ask", "input_schema": {"type": "object"}}],
    },
    {
        "type": "mcp_approval_request",
        "id": "mcpr_1",
        "server_label": "deepwiki",
        "name": "ask",
        "arguments": "{}",
    },
    {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True},
    {
        "type": "mcp_call",
        "id": "mcp_1",
        "server_label": "deepwiki",
        "name": "ask",
        "arguments": "{}",
        "output": "42",
        "status": "completed",
    },
    {
        "type": "web_search_call",
        "id": "ws_1",
        "status": "completed",
        "action": {"type": "search", "query": "loopwire"},
    },
    {
        "type": "file_search_call",
        "id": "fs_1",
        "status": "completed",
        "queries": ["q"],
        "results": None,
    },
    {
        "type": "code_interpreter_call",
        "id": "ci_1",
        "status": "completed",
        "container_id": "cntr_1",
        "code": "print(1)",
        "outputs": None,
    },
    {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": None},
    {"type": "message", "role": "user", "content": "and now?", "future_field": {"kept": True}},
]
"""Every item type of the SDK's input union (item references and compaction are tested on their own), with
each call answered, and one field no SDK version defines (it must survive storing and listing)."""


def _without_ids(item: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if key in sent}


def test_every_item_type_round_trips_http(client: openai.OpenAI, strict_client: openai.OpenAI) -> None:
    first = strict_client.responses.create(model=MODEL, input=EVERY_ITEM, tools=ALL_TOOLS)  # type: ignore[arg-type]
    assert first.status == "completed"
    raw = client.responses.input_items.with_raw_response.list(first.id, order="asc", limit=100)
    listed = raw.http_response.json()["data"]
    assert [item["type"] for item in listed] == [item["type"] for item in EVERY_ITEM]
    for sent, got in zip(EVERY_ITEM, listed, strict=True):
        assert got["id"], got
        if isinstance(sent.get("content"), str):
            continue  # listed as a list of parts, as the SDK's item types require
        assert _without_ids(got, sent) == sent, (sent, got)
    assert listed[-1]["future_field"] == {"kept": True}
    # the SDK's strict types accept the listing
    assert len(strict_client.responses.input_items.list(first.id, limit=100).data) == len(EVERY_ITEM)
    # the chain resolves through the store: a continuation sees every item, and lists them again
    second = strict_client.responses.create(
        model=MODEL,
        input="more",
        previous_response_id=first.id,
        tools=ALL_TOOLS,  # type: ignore[arg-type]
    )
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens
    again = client.responses.input_items.with_raw_response.list(second.id, order="asc", limit=100)
    relisted = again.http_response.json()["data"]
    assert relisted[: len(listed)] == listed


async def test_every_item_type_round_trips_ws(async_client: openai.AsyncOpenAI, ws: Connection) -> None:
    frame = {
        "type": "response.create",
        "model": MODEL,
        "input": EVERY_ITEM,
        "tools": ALL_TOOLS,
        "store": True,
    }
    events = await frame_turn(ws, frame)
    assert events[-1].type == "response.completed", events[-1]
    first = events[-1].response
    # from the connection cache, then (a new socket) from the store
    follow = {"type": "response.create", "model": MODEL, "input": "next", "previous_response_id": first.id}
    assert (await frame_turn(ws, follow))[-1].type == "response.completed"
    async with async_client.responses.connect() as fresh:
        events = await frame_turn(fresh, follow)
    assert events[-1].type == "response.completed", events[-1]
    listed = (await async_client.responses.input_items.list(first.id, order="asc", limit=100)).data
    assert [item.type for item in listed] == [item["type"] for item in EVERY_ITEM]


@pytest.mark.parametrize(
    ("output", "param"),
    [
        ({"type": "function_call_output", "call_id": "nope", "output": "x"}, "input[1].call_id"),
        ({"type": "custom_tool_call_output", "call_id": "nope", "output": "x"}, "input[1].call_id"),
        ({"type": "shell_call_output", "call_id": "nope", "output": []}, "input[1].call_id"),
        ({"type": "apply_patch_call_output", "call_id": "nope", "status": "completed"}, "input[1].call_id"),
        (
            {"type": "computer_call_output", "call_id": "nope", "output": {"type": "computer_screenshot"}},
            "input[1].call_id",
        ),
        (
            {"type": "mcp_approval_response", "approval_request_id": "nope", "approve": True},
            "input[1].approval_request_id",
        ),
    ],
)
def test_every_output_must_answer_an_issued_call(base_url: str, output: dict[str, Any], param: str) -> None:
    status, reply = create_raw(
        base_url, {"model": MODEL, "input": [{"role": "user", "content": "hi"}, output]}
    )
    assert status == 400, reply
    assert reply["error"]["param"] == param, reply


@pytest.mark.parametrize("bad", [{"type": "telepathy_call", "id": "x"}, {"type": 3}, {"role": 5}])
def test_unknown_item_type_is_400_naming_it(base_url: str, bad: dict[str, Any]) -> None:
    status, reply = create_raw(
        base_url,
        {"model": MODEL, "input": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, bad]},
    )
    assert status == 400, reply
    assert reply["error"]["param"].startswith("input[2]"), reply
    if bad.get("type") == "telepathy_call":
        assert reply["error"]["param"] == "input[2].type" and "telepathy_call" in reply["error"]["message"]


async def test_unknown_item_type_over_ws_is_an_error_event(ws: Connection) -> None:
    frame = {"type": "response.create", "model": MODEL, "input": [{"type": "telepathy_call"}]}
    events = await frame_turn(ws, frame)
    assert events[-1].type == "error" and events[-1].error.param == "input[0].type"


# -- reasoning -------------------------------------------------------------------------------------------


def test_reasoning_text_streams_as_a_reasoning_item(strict_client: openai.OpenAI) -> None:
    events = _stream(strict_client, input="think first", reasoning={"effort": "low"})
    types = collapse([event.type for event in events])
    assert types[:8] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ], types
    response = events[-1].response
    reasoning, message = response.output
    assert isinstance(reasoning, ResponseReasoningItem) and reasoning.content
    done = next(event for event in events if event.type == "response.reasoning_text.done")
    assert reasoning.content[0].text == done.text and done.text.startswith("Thinking:")
    assert reasoning.encrypted_content is None
    assert response.usage is not None and response.usage.output_tokens_details.reasoning_tokens > 0
    assert message.type == "message"


def test_reasoning_summary_and_encrypted_content(strict_client: openai.OpenAI) -> None:
    events = _stream(
        strict_client,
        input="think",
        reasoning={"effort": "medium", "summary": "auto"},
        include=["reasoning.encrypted_content"],
        store=False,
    )
    types = collapse([event.type for event in events])
    assert types[2:8] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
    ], types
    response = events[-1].response
    reasoning = response.output[0]
    assert isinstance(reasoning, ResponseReasoningItem)
    assert reasoning.summary and reasoning.summary[0].text.startswith("Thinking:")
    assert reasoning.encrypted_content
    # a store=false client sends the reasoning back, encrypted content only: the model reads it again
    back = reasoning.to_dict(mode="json")
    back["summary"] = []
    with_it = strict_client.responses.create(
        model=MODEL, input=[back, {"role": "user", "content": "go on"}], store=False
    )
    without = strict_client.responses.create(
        model=MODEL, input=[{"role": "user", "content": "go on"}], store=False
    )
    assert with_it.usage is not None and without.usage is not None
    assert (
        with_it.usage.input_tokens > without.usage.input_tokens + len(reasoning.summary[0].text.split()) // 2
    )


async def test_reasoning_events_over_ws_validate(ws: Connection) -> None:
    frame = {
        "type": "response.create",
        "model": MODEL,
        "input": "hi",
        "reasoning": {"effort": "high", "summary": "detailed"},
        "include": ["reasoning.encrypted_content"],
    }
    events = await frame_turn(ws, frame)
    assert events[-1].type == "response.completed"
    assert {"response.reasoning_summary_text.delta", "response.reasoning_summary_part.done"} <= {
        event.type for event in events
    }
    assert events[-1].response.output[0].encrypted_content


# -- text.format, models, fields ------------------------------------------------------------------------

PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}


def test_json_schema_text_format_answers_with_valid_json(strict_client: openai.OpenAI) -> None:
    text_format = {"type": "json_schema", "name": "person", "schema": PERSON_SCHEMA, "strict": True}
    response = strict_client.responses.create(model=MODEL, input="who?", text={"format": text_format})
    answer = json.loads(response.output_text)
    assert set(answer) == {"name", "age", "tags"}
    assert isinstance(answer["name"], str) and isinstance(answer["age"], int) and answer["age"] >= 0
    assert all(tag in ("a", "b") for tag in answer["tags"])
    assert response.text is not None and response.text.format.type == "json_schema"


def test_models_endpoint(strict_client: openai.OpenAI) -> None:
    models = strict_client.models.list()
    assert models.data and all(model.object == "model" for model in models.data)
    listed = models.data[0].id
    assert strict_client.models.retrieve(listed).id == listed
    assert strict_client.models.retrieve(MODEL).id == MODEL  # the sim engine serves any name


def test_client_fields_are_accepted_and_echoed(strict_client: openai.OpenAI) -> None:
    response = strict_client.responses.create(
        model=MODEL,
        input="hi",
        prompt_cache_key="my-cache-key",
        include=["reasoning.encrypted_content", "message.output_text.logprobs"],
        reasoning={"summary": "auto"},
        parallel_tool_calls=False,
        extra_body={"client_metadata": {"a": "b"}, "a_field_from_the_future": [1]},
    )
    assert response.prompt_cache_key == "my-cache-key"
    assert response.parallel_tool_calls is False
    assert response.reasoning is not None and response.reasoning.summary == "auto"


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One response in flight per connection, and a model slow enough that a second lane must wait."""
    directory = tmp_path_factory.mktemp("loopwire-capped")
    args = ("--sim-ttft-ms", "200", "--limit", "max_in_flight=1")
    proc = ServerProcess("memory", directory / "server.log", args).start()
    try:
        yield proc
    finally:
        proc.stop()


async def test_response_queued_when_the_in_flight_cap_is_reached(capped_server: ServerProcess) -> None:
    sdk = make_async_client(capped_server.base_url)
    try:
        async with sdk.responses.connect() as conn:
            await conn.send_raw(
                json.dumps({"type": "response.create", "model": MODEL, "input": "a", "stream_id": "one"})
            )  # type: ignore[attr-defined]
            await conn.send_raw(
                json.dumps({"type": "response.create", "model": MODEL, "input": "b", "stream_id": "two"})
            )  # type: ignore[attr-defined]
            by_lane: dict[str, list[Any]] = {"one": [], "two": []}
            done = 0
            while done < 2:
                event = await recv(conn)
                by_lane[event.stream_id].append(event)
                done += event.type == "response.completed"
    finally:
        await sdk.close()
    first, second = by_lane["one"], by_lane["two"]
    assert first[0].type == "response.created"
    assert [event.type for event in second[:2]] == ["response.queued", "response.created"]
    queued = second[0]
    assert queued.response.status == "queued" and queued.sequence_number == 0
    assert [event.sequence_number for event in second] == list(range(len(second)))
    assert {event.response.id for event in second if hasattr(event, "response")} == {queued.response.id}


def test_item_reference_without_type(client: openai.OpenAI) -> None:
    """The SDK's ItemReference may omit `type`: `{"id": ...}` alone refers to an earlier item."""
    first = client.responses.create(model=MODEL, input="Referenced turn.")
    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"id": first.output[0].id}, {"role": "user", "content": "Again?"}],  # type: ignore[list-item]
    )
    assert second.status == "completed"
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input=[{"id": "msg_not_anywhere"}])  # type: ignore[list-item]
    assert caught.value.body["param"] == "input[0].id"  # type: ignore[index]
