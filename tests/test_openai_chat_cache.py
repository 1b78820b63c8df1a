"""The openai-chat engine's encoded-message cache (translate.MessageCache): the body it builds is byte for
byte the uncached one, turn after turn, across forks, lanes, instructions and tools changes and evictions;
it stays within its byte budget; and the engine sends upstream what the uncached translation would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest
from fake_chat_upstream import FakeUpstream

from loopwire.engines.base import EngineDelta, EngineRequest, ToolSpec
from loopwire.engines.common.chat_messages import MessageCache
from loopwire.engines.openai_chat import OpenAIChatEngine, OpenAIChatSettings
from loopwire.engines.openai_chat.translate import (
    build_body,
    build_messages,
    build_wire_messages,
    encode_body,
)
from loopwire.protocol.compaction import encode_summary
from loopwire.protocol.context import EMPTY_CONTEXT, Context
from loopwire.protocol.items import (
    Compaction,
    FunctionCall,
    FunctionCallOutput,
    InputImage,
    InputItem,
    InputText,
    Message,
    OutputText,
    Reasoning,
)

URL = "http://127.0.0.1:9/v1"
TOOLS = (
    ToolSpec("read_file", "Read a file.", {"type": "object", "properties": {"path": {"type": "string"}}}),
    ToolSpec("run_tests", None, None),
)


def settings(**changes: Any) -> OpenAIChatSettings:
    return OpenAIChatSettings(upstreams=(URL,), **changes)


def request(history: Context, **fields: Any) -> EngineRequest:
    fields.setdefault("instructions", "Be careful. " * 10)
    fields.setdefault("tools", TOOLS)
    fields.setdefault("model", "m")
    return EngineRequest(history=history, cache_key="owner/lane", **fields)


def first_items() -> list[InputItem]:
    return [
        Message(role="developer", content="Prefer small diffs."),
        Message(
            role="user",
            content=[InputText(text="What is in this picture? \u00e9\u2603"), InputImage(image_url="data:x")],
        ),
    ]


def turn_items(number: int) -> list[InputItem]:
    """One agent turn's output and the client's answer: every kind of item the translation handles."""
    items: list[InputItem] = [
        Reasoning(id=f"rs_{number}", content=[{"type": "reasoning_text", "text": f"think {number}"}]),
        Message(role="assistant", content=[OutputText(text=f'Looking "{number}"\n')]),
    ]
    if number % 2:  # calls right after the previous turn's outputs, as most agent turns go
        items.pop()
    items += [
        FunctionCall(call_id=f"call_{number}a", name="read_file", arguments='{"path": "a.py"}'),
        FunctionCall(call_id=f"call_{number}b", name="run_tests", arguments="{}"),
        FunctionCallOutput(call_id=f"call_{number}a", output=f"line {number}\n" * 50),
        FunctionCallOutput(call_id=f"call_{number}b", output=[InputText(text="ok"), InputText(text="done")]),
    ]
    if number % 4 == 0:
        items.append(Compaction(encrypted_content=encode_summary(f"summary {number}"), id=f"cmp_{number}"))
    if number % 3 == 0:
        items.append(Message(role="system", content="Keep going."))
    return items


def uncached(req: EngineRequest, chat: OpenAIChatSettings) -> bytes:
    return encode_body(build_body(req, chat))


def cached(req: EngineRequest, chat: OpenAIChatSettings, cache: MessageCache) -> bytes:
    return encode_body(build_body(req, chat, cache))


@pytest.mark.parametrize("reasoning", ["drop", "reasoning_content", "reasoning"])
@pytest.mark.parametrize("developer_role", ["system", "developer"])
def test_bytes_identical_turn_after_turn(reasoning: str, developer_role: str) -> None:
    chat = settings(reasoning=reasoning, developer_role=developer_role)
    cache = MessageCache(1 << 20)
    history = EMPTY_CONTEXT.extend(first_items())
    for number in range(12):
        req = request(history)
        hits_before = cache.hits
        assert cached(req, chat, cache) == uncached(req, chat)
        if number:  # every earlier item that is cacheable was served from the cache
            cacheable = sum(not isinstance(item, Reasoning) and not _assistant(item) for item in history)
            new = sum(not isinstance(i, Reasoning) and not _assistant(i) for i in turn_items(number - 1))
            assert cache.hits - hits_before == cacheable - new
        history = history.extend(turn_items(number))
    assert cache.misses == len(cache)  # each item was encoded once


def _assistant(item: InputItem) -> bool:
    return isinstance(item, Message) and item.role == "assistant"


def test_wire_messages_hold_encoded_messages_that_decode_to_the_plain_ones() -> None:
    chat = settings(reasoning="reasoning_content")
    cache = MessageCache(1 << 20)
    history = EMPTY_CONTEXT.extend([*first_items(), *turn_items(1), *turn_items(2)])
    build_wire_messages(history, "hi", chat, cache)
    wire = build_wire_messages(history, "hi", chat, cache)
    plain = build_messages(history, "hi", chat)
    assert json.loads(encode_body({"messages": wire})) == {"messages": plain}
    assert any(type(message).__name__ == "Raw" for message in wire)


def test_forks_and_lanes_share_one_cache_and_stay_correct() -> None:
    chat = settings(reasoning="reasoning_content")
    cache = MessageCache(1 << 20)
    trunk = EMPTY_CONTEXT.extend(first_items()).extend(turn_items(1))
    left = trunk.extend(turn_items(2))
    right = trunk.extend([FunctionCallOutput(call_id="call_2a", output="a different answer")])
    other_lane = EMPTY_CONTEXT.extend(
        [Message(role="user", content="What is in this picture? \u00e9\u2603"), *turn_items(1)]
    )  # equal content, distinct objects
    for history in (left, right, other_lane, left, trunk, right):
        req = request(history)
        assert cached(req, chat, cache) == uncached(req, chat)
    assert b"a different answer" in cached(request(right), chat, cache)
    assert b"a different answer" not in cached(request(left), chat, cache)


def test_equal_items_that_are_distinct_objects_are_separate_entries() -> None:
    cache = MessageCache(1 << 20)
    one = FunctionCallOutput(call_id="c", output="same")
    two = FunctionCallOutput(call_id="c", output="same")
    assert one == two and one is not two
    build_wire_messages([one, two], None, settings(), cache)
    assert len(cache) == 2
    assert cache.get(one) is not None and cache.get(two) is not None
    assert cache.get(FunctionCallOutput(call_id="c", output="same")) is None


def test_instructions_and_tools_changes_are_never_served_stale() -> None:
    chat = settings()
    cache = MessageCache(1 << 20)
    history = EMPTY_CONTEXT.extend(first_items()).extend(turn_items(1))
    variants = [
        request(history),
        request(history, instructions="Now something else entirely."),
        request(history, instructions=None),
        request(history, tools=TOOLS[:1], tool_choice="required"),
        request(history, tools=()),
        request(history),
    ]
    for req in variants:
        assert cached(req, chat, cache) == uncached(req, chat)
    assert b"Now something else entirely." in cached(variants[1], chat, cache)
    assert b"Now something else entirely." not in cached(variants[2], chat, cache)


def test_size_stays_within_the_budget_and_evicted_items_are_encoded_again() -> None:
    chat = settings()
    budget = 8_000
    cache = MessageCache(budget)
    history = EMPTY_CONTEXT.extend(first_items())
    for number in range(40):  # each turn adds ~700 bytes of encoded messages: far past the budget
        history = history.extend(turn_items(number))
        req = request(history)
        assert cached(req, chat, cache) == uncached(req, chat)
        assert cache.size <= budget
        assert cache.size == sum(len(entry[1]) for entry in cache._entries.values())
    assert 0 < len(cache) < 100
    assert cache.misses > cache.hits  # the history no longer fits: most items are encoded again


def test_least_recently_used_goes_first_and_oversized_items_are_not_kept() -> None:
    outputs = [FunctionCallOutput(call_id=f"c{n}", output="x" * 100) for n in range(3)]
    size = len(encode_body(build_messages(outputs[:1], None, settings())[0]))
    cache = MessageCache(2 * size)
    build_wire_messages(outputs[:2], None, settings(), cache)
    assert cache.get(outputs[0]) is not None  # now the most recently used
    build_wire_messages(outputs[2:], None, settings(), cache)
    assert cache.get(outputs[1]) is None and cache.get(outputs[0]) is not None
    assert cache.get(outputs[2]) is not None
    huge = FunctionCallOutput(call_id="big", output="y" * (3 * size))
    wire = build_wire_messages([huge], None, settings(), cache)
    assert json.loads(encode_body({"m": wire})) == {"m": build_messages([huge], None, settings())}
    assert cache.get(huge) is None and cache.size <= 2 * size
    cache.clear()
    assert len(cache) == 0 and cache.size == 0


def test_settings_budget() -> None:
    assert OpenAIChatEngine(settings()).message_cache is not None
    assert OpenAIChatEngine(settings(message_cache_bytes=0)).message_cache is None
    with pytest.raises(ValueError, match="message_cache_bytes"):
        settings(message_cache_bytes=-1)


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = await FakeUpstream().start()
    yield upstream
    await upstream.close()


async def run(engine: OpenAIChatEngine, req: EngineRequest) -> list[list[EngineDelta]]:
    batches: list[list[EngineDelta]] = []
    async with aclosing(engine.stream(req)) as stream:
        async for batch in stream:
            batches.append(batch)
    return batches


async def test_the_engine_sends_what_the_uncached_translation_sends(fake: FakeUpstream) -> None:
    engine = OpenAIChatEngine(OpenAIChatSettings(upstreams=(fake.base_url,), reasoning="reasoning_content"))
    try:
        history = EMPTY_CONTEXT.extend(first_items())
        expected: list[dict[str, Any]] = []
        for number in range(4):
            req = request(history, model="vllm_tool_calls")
            await run(engine, req)
            expected.append(json.loads(uncached(req, engine.settings)))
            history = history.extend(turn_items(number))
        assert fake.bodies() == expected
        assert engine.message_cache is not None and engine.message_cache.hits > 0
    finally:
        await engine.aclose()
