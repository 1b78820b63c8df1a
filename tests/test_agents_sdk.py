"""The official `openai-agents` SDK over WebSocket mode against the live server: one agent with one function
tool runs to completion (the model calls the tool, the SDK runs it and sends its output back, the model
answers), every request on the socket, the continuation chained by `previous_response_id`.

The sim engine calls a tool when `tool_choice` forces one; the SDK resets `tool_choice` after the call
(`reset_tool_choice`), so the second turn is answered with text. Tracing export is off: nothing leaves
loopback.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import AsyncIterator

import agents
import openai
import pytest
from agents import Agent, ModelSettings, Runner, function_tool
from conftest import ServerProcess, make_async_client

CITY_CALLS: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    CITY_CALLS.append(city)
    return f"It is sunny in {city}."


def counter(server: ServerProcess, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"{server.origin}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
async def websocket_agents_sdk(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    """The Agents SDK's process-wide defaults pointed at loopwire over WebSocket mode, restored afterwards."""
    client = make_async_client(base_url)
    agents.set_tracing_disabled(True)
    agents.set_default_openai_client(client, use_for_tracing=False)
    agents.set_default_openai_api("responses")
    agents.set_default_openai_responses_transport("websocket")
    try:
        yield client
    finally:
        agents.set_default_openai_responses_transport("http")
        await client.close()


async def test_agent_with_one_function_tool_runs_to_completion_over_websocket(
    websocket_agents_sdk: openai.AsyncOpenAI, server: ServerProcess
) -> None:
    ws_turns = 'transport="ws",outcome="completed"'
    before_ws = counter(server, "loopwire_turns_total", ws_turns)
    before_http = counter(server, "loopwire_turns_total", 'transport="http",outcome="completed"')
    before_hits = counter(server, "loopwire_parent_lookups_total", 'result="cache"')
    CITY_CALLS.clear()
    agent = Agent(
        name="weather",
        instructions="Answer with the weather tool.",
        model="loopwire-sim",
        tools=[get_weather],
        model_settings=ModelSettings(tool_choice="required"),
    )

    result = await Runner.run(agent, "What is the weather in Paris?", auto_previous_response_id=True)

    assert len(CITY_CALLS) == 1 and CITY_CALLS[0], "the model's call ran the tool once, with a city"
    assert isinstance(result.final_output, str) and result.final_output
    calls = [item for item in result.new_items if item.type == "tool_call_item"]
    outputs = [item for item in result.new_items if item.type == "tool_call_output_item"]
    assert len(calls) == 1 and len(outputs) == 1
    assert len(result.raw_responses) == 2
    assert counter(server, "loopwire_turns_total", ws_turns) - before_ws == 2
    assert counter(server, "loopwire_turns_total", 'transport="http",outcome="completed"') == before_http
    assert counter(server, "loopwire_parent_lookups_total", 'result="cache"') - before_hits == 1
