"""The client program of tests/test_agents_sdk.py: the official `openai-agents` SDK over WebSocket mode, one
agent with one function tool, against the server at argv[1]; prints one JSON line saying what happened.

It runs in the SDK's own venv (`.venv-agents`, made by `make test`): openai-agents requires websockets<17 and
loopwire >=17, so the two cannot share one, just as a user's agent and a server would not. Tracing export is
off, so nothing leaves loopback. Must not import loopwire or the tests' modules.
"""

from __future__ import annotations

import asyncio
import json
import sys
from importlib.metadata import version

import agents
import openai
from agents import Agent, ModelSettings, Runner, function_tool

CITY_CALLS: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    CITY_CALLS.append(city)
    return f"It is sunny in {city}."


async def main(base_url: str, api_key: str) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=20.0)
    agents.set_tracing_disabled(True)
    agents.set_default_openai_client(client, use_for_tracing=False)
    agents.set_default_openai_api("responses")
    agents.set_default_openai_responses_transport("websocket")
    agent = Agent(
        name="weather",
        instructions="Answer with the weather tool.",
        model="loopwire-sim",
        tools=[get_weather],
        # the sim engine calls a tool when tool_choice forces one; the SDK resets tool_choice after the call
        # (reset_tool_choice), so the next turn is answered with text
        model_settings=ModelSettings(tool_choice="required"),
    )
    result = await Runner.run(agent, "What is the weather in Paris?", auto_previous_response_id=True)
    await client.close()
    print(
        json.dumps(
            {
                "versions": {"openai": openai.__version__, "openai-agents": version("openai-agents")},
                "city_calls": CITY_CALLS,
                "final_output": result.final_output,
                "items": [item.type for item in result.new_items],
                "responses": len(result.raw_responses),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
