"""The whole tool and item vocabulary of the Responses API, through a real `loopwire serve`, with the
official SDK's strict types: every tool type echoed exactly as sent, unknown tool types and fields accepted,
malformed known tools and unknown item types refused with a 400 naming the field, Codex CLI's first frame."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest
from openai.resources.responses.responses import AsyncResponsesConnection as Connection
from openai.types.responses.responses_server_event import ResponsesServerEvent
from sdk_types import classes_by_type
from test_sdk_http import raw_request

MODEL = "sim-model"
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
