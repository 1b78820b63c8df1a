"""The llama-cpp-python dialect's request plan (engines/openai_chat/dialect.py) and round-robin routing,
without a server; tests/real/test_quirks.py shows each quirk on the real server."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from loopwire.engines.base import EngineRequest, NamedToolChoice, ToolChoice, ToolSpec
from loopwire.engines.common.chat_messages import MessageCache
from loopwire.engines.openai_chat.dialect import plan_turn, probe_body
from loopwire.engines.openai_chat.settings import OpenAIChatSettings
from loopwire.engines.openai_chat.translate import build_body, encode_body
from loopwire.engines.openai_chat.upstream import UpstreamPool
from loopwire.protocol.context import EMPTY_CONTEXT
from loopwire.protocol.items import FunctionCall, FunctionCallOutput, Message

LLAMA = OpenAIChatSettings(upstreams=("http://127.0.0.1:9/v1",), dialect="llama-cpp-python")
WEATHER = ToolSpec("get_weather", "Weather.", {"type": "object", "properties": {"city": {"type": "string"}}})
TIME = ToolSpec("get_time", "Time.", {"type": "object", "properties": {"zone": {"type": "string"}}})


def turn(choice: ToolChoice, tools: tuple[ToolSpec, ...] = (WEATHER,)) -> EngineRequest:
    history = EMPTY_CONTEXT.extend([Message(role="user", content="hi")])
    return EngineRequest(model="m", history=history, tools=tools, tool_choice=choice)


def plan(choice: ToolChoice, tools: tuple[ToolSpec, ...] = (WEATHER,)) -> Any:
    request = turn(choice, tools)
    return plan_turn(build_body(request, LLAMA), request, LLAMA)


def test_the_standard_dialect_changes_nothing() -> None:
    settings = OpenAIChatSettings(upstreams=("http://127.0.0.1:9/v1",))
    request = turn("auto")
    body = build_body(request, settings)
    planned = plan_turn(body, request, settings)
    assert planned.body is body and planned.text_fallback is None and not planned.probe


def test_required_with_one_tool_names_it_and_streams() -> None:
    planned = plan("required")
    assert planned.body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert planned.body["stream"] is True and planned.probe and planned.text_fallback is None


def test_a_named_choice_stays_the_object_form() -> None:
    planned = plan(NamedToolChoice("get_time"), (WEATHER, TIME))
    assert planned.body["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert len(planned.body["tools"]) == 2 and planned.probe


@pytest.mark.parametrize("choice", ["required", "auto"])
def test_required_among_several_and_auto_go_unstreamed_with_an_explicit_auto(choice: ToolChoice) -> None:
    planned = plan(choice, (WEATHER, TIME))
    assert planned.body["tool_choice"] == "auto" and planned.body["stream"] is False
    assert "stream_options" not in planned.body
    if choice == "auto":  # an empty message is asked again, streamed, without the tools
        fallback = planned.text_fallback
        assert fallback is not None and fallback["stream"] is True
        assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(fallback)
    else:
        assert planned.text_fallback is None


def test_without_tools_only_the_probe_is_added() -> None:
    planned = plan("auto", ())
    assert "tools" not in planned.body and planned.probe and planned.text_fallback is None
    probe = probe_body(planned.body, LLAMA)
    assert probe["stream"] is False and probe["max_tokens"] == 1 and "stream_options" not in probe
    assert probe["messages"] == planned.body["messages"]


@pytest.mark.parametrize("cached", [False, True])
def test_tool_outputs_become_user_messages_encoded_or_not(cached: bool) -> None:
    items = [
        Message(role="user", content="weather?"),
        FunctionCall(call_id="c1", name="get_weather", arguments="{}"),
        FunctionCallOutput(call_id="c1", output="18 C"),
    ]
    request = EngineRequest(model="m", history=EMPTY_CONTEXT.extend(items))
    body = build_body(request, LLAMA, MessageCache(1 << 20) if cached else None)
    sent = msgspec.json.decode(encode_body(plan_turn(body, request, LLAMA).body))["messages"]
    assert [message["role"] for message in sent] == ["user", "assistant", "user"]
    assert sent[2]["content"] == "Output of functions.get_weather:\n18 C"
    assert sent[1]["content"] == "" and sent[1]["tool_calls"][0]["id"] == "c1"  # never null: a 500 there


def test_round_robin_rotates_and_sticky_keeps_a_lane() -> None:
    urls = ("http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1", "http://127.0.0.1:3/v1")
    sticky = UpstreamPool(OpenAIChatSettings(upstreams=urls))
    assert len({sticky.candidates("lane-a")[0].number for _ in range(6)}) == 1
    spread = UpstreamPool(OpenAIChatSettings(upstreams=urls, routing="round-robin"))
    firsts = [spread.candidates("lane-a")[0].number for _ in range(6)]
    assert firsts == [1, 2, 3, 1, 2, 3]
    assert sorted(replica.number for replica in spread.candidates("lane-a")) == [1, 2, 3]


@pytest.mark.parametrize("cached", [False, True])
def test_the_same_conversation_is_the_same_prompt_whatever_the_servers_call_ids(cached: bool) -> None:
    """llama-cpp-python's call ids end in a random completion id, and its template leaves ids out of the
    prompt: the tool outputs name their call by function (and place), so two runs of one conversation
    send the same bytes (greedy decoding then gives the same answer), encoded messages or not."""

    def sent(ids: tuple[str, str, str]) -> list[dict[str, Any]]:
        """The messages sent, without the `id` of each assistant message's calls (not in the prompt)."""
        items = [
            Message(role="user", content="weather and time?"),
            FunctionCall(call_id=ids[0], name="get_weather", arguments='{"city": "Oslo"}'),
            FunctionCallOutput(call_id=ids[0], output="18 C"),
            FunctionCall(call_id=ids[1], name="get_weather", arguments='{"city": "Lima"}'),
            FunctionCall(call_id=ids[2], name="get_time", arguments="{}"),
            FunctionCallOutput(call_id=ids[2], output="12:00"),
            FunctionCallOutput(call_id=ids[1], output="21 C"),
            FunctionCallOutput(call_id="not-in-history", output="?"),
        ]
        request = EngineRequest(model="m", history=EMPTY_CONTEXT.extend(items))
        body = build_body(request, LLAMA, MessageCache(1 << 20) if cached else None)
        messages: list[dict[str, Any]] = msgspec.json.decode(
            encode_body(plan_turn(body, request, LLAMA).body)
        )["messages"]
        for message in messages:
            for call in message.get("tool_calls", ()):
                del call["id"]
        return messages

    first = sent(("call__0_get_weather_cmpl-1a2b", "a1", "b1"))
    assert first == sent(("call__0_get_weather_cmpl-9f8e7d", "a22", "b333"))
    outputs = [message["content"] for message in first if message["role"] == "user"]
    assert outputs[1:] == [
        "Output of functions.get_weather:\n18 C",
        "Output of functions.get_time (call 2 of 2):\n12:00",
        "Output of functions.get_weather (call 1 of 2):\n21 C",
        "Output of tool call not-in-history:\n?",
    ]
