"""OpenAIChatEngine against fake upstreams on loopback (real aiohttp servers replaying vLLM, llama.cpp and
Ollama streams): deltas and usage, what the upstream receives, batching, keep-alive, replica stickiness,
failover only before output, timeouts and error mapping; plus the engine factory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest
from fake_chat_upstream import FakeUpstream, closed_port_url, fixture_events
from test_openai_chat_chunks import EXPECTED, assemble

from loopwire.engines.base import (
    EngineDelta,
    EngineError,
    EngineRequest,
    Finished,
    TextDelta,
    ToolSpec,
    Usage,
)
from loopwire.engines.common.affinity import affinity_token
from loopwire.engines.factory import build_engine
from loopwire.engines.openai_chat import OpenAIChatEngine, OpenAIChatSettings
from loopwire.engines.sim.engine import SimEngine
from loopwire.protocol.context import EMPTY_CONTEXT
from loopwire.protocol.items import (
    FunctionCall,
    FunctionCallOutput,
    InputImage,
    InputItem,
    InputText,
    Message,
)

FAST = {"connect_timeout_s": 1.0, "first_byte_timeout_s": 2.0, "idle_timeout_s": 0.3, "cooldown_s": 30.0}
WEATHER = ToolSpec("get_weather", "Weather.", {"type": "object", "properties": {"city": {"type": "string"}}})


@pytest.fixture
async def fakes() -> AsyncIterator[list[FakeUpstream]]:
    started = [await FakeUpstream().start() for _ in range(3)]
    yield started
    for fake in started:
        await fake.close()


_engines: list[OpenAIChatEngine] = []


@pytest.fixture(autouse=True)
async def _close_engines() -> AsyncIterator[None]:
    yield
    while _engines:
        await _engines.pop().aclose()


def engine_for(*urls: str, **options: Any) -> OpenAIChatEngine:
    engine = OpenAIChatEngine(OpenAIChatSettings(upstreams=urls, **{**FAST, **options}))
    _engines.append(engine)
    return engine


def turn(model: str, items: list[InputItem] | None = None, **fields: Any) -> EngineRequest:
    history = EMPTY_CONTEXT.extend(items if items is not None else [Message(role="user", content="hello")])
    return EngineRequest(
        model=model, history=history, cache_key=fields.pop("cache_key", "owner/lane"), **fields
    )


async def run(engine: OpenAIChatEngine, request: EngineRequest) -> list[list[EngineDelta]]:
    batches: list[list[EngineDelta]] = []
    async with aclosing(engine.stream(request)) as stream:
        async for batch in stream:
            batches.append(batch)
    return batches


async def fail(
    engine: OpenAIChatEngine, request: EngineRequest
) -> tuple[EngineError, list[list[EngineDelta]]]:
    batches: list[list[EngineDelta]] = []
    with pytest.raises(EngineError) as raised:
        async with aclosing(engine.stream(request)) as stream:
            async for batch in stream:
                batches.append(batch)
    return raised.value, batches


def flat(batches: list[list[EngineDelta]]) -> list[EngineDelta]:
    return [delta for batch in batches for delta in batch]


def finished_of(batches: list[list[EngineDelta]]) -> Finished:
    last = batches[-1][-1]
    assert isinstance(last, Finished)
    assert all(not isinstance(delta, Finished) for delta in flat(batches)[:-1])
    return last


def key_ranked_first(engine: OpenAIChatEngine, endpoint: str) -> str:
    """A cache key whose first-choice replica is `endpoint`."""
    for number in range(1000):
        key = f"owner/lane-{number}"
        if engine.pool.ranking(key)[0].endpoint == endpoint:
            return key
    raise AssertionError("no key ranks that replica first")


# -- replaying real servers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "vllm_text",
        "vllm_tool_calls",
        "vllm_reasoning",
        "llamacpp_text",
        "llamacpp_tool_call",
        "llamacpp_tool_call_streamed",
        "ollama_text",
        "ollama_tool_calls",
        "ollama_legacy_tool_call",
    ],
)
async def test_each_recorded_server(fakes: list[FakeUpstream], name: str) -> None:
    text, calls, stop, usage, estimated = EXPECTED[name]
    engine = engine_for(fakes[0].base_url)
    batches = await run(engine, turn(name))
    finished = finished_of(batches)
    assert assemble(flat(batches)[:-1]) == (text, calls)
    assert finished.stop_reason == stop and finished.render is None
    if estimated:  # no usage from the upstream: the engine's own estimate of this request's input
        assert finished.usage.input_tokens == engine.count_tokens(turn(name)) > 0
        assert finished.usage.output_tokens == usage.output_tokens
        assert engine.stats.estimated_usage_turns == 1
    else:
        assert finished.usage == usage
    assert finished.timings["total_ms"] >= finished.timings["ttft_ms"] >= 0


async def test_what_the_upstream_receives(fakes: list[FakeUpstream]) -> None:
    engine = engine_for(
        fakes[0].base_url, api_key="sk-upstream", model="served-model", extra_headers={"X-Team": "a"}
    )
    items: list[InputItem] = [
        Message(role="user", content="weather?"),
        FunctionCall(call_id="call_1", name="get_weather", arguments='{"city":"Paris"}'),
        FunctionCallOutput(call_id="call_1", output="18C"),
    ]
    fakes[0].script = ["vllm_text"]
    request = turn("client-model", items, instructions="Be brief.", tools=(WEATHER,), max_output_tokens=50)
    await run(engine, request)
    (received,) = fakes[0].received
    assert received.body["model"] == "served-model"
    assert received.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]
    assert received.body["stream"] is True and received.body["stream_options"] == {"include_usage": True}
    assert received.body["tools"][0]["function"]["name"] == "get_weather"
    assert received.body["max_tokens"] == 50
    headers = received.headers
    assert headers["Authorization"] == "Bearer sk-upstream"
    assert headers["X-Loopwire-Cache-Key"] == affinity_token("owner/lane")
    assert headers["X-Team"] == "a"
    assert headers["Accept"] == "text/event-stream"


async def test_deltas_of_one_read_are_one_batch(fakes: list[FakeUpstream]) -> None:
    engine = engine_for(fakes[0].base_url)
    whole = await run(engine, turn("vllm_text"))
    assert len(whole) == 1  # the fixture left in one write: its deltas and the Finished together
    paced = await run(engine, turn("vllm_text@paced"))
    assert len(paced) > 2
    texts = [delta.text for delta in flat(paced) if isinstance(delta, TextDelta)]
    assert "".join(texts) == "The sky is blue."
    assert finished_of(paced).usage == Usage(31, 16, 6)


@pytest.mark.parametrize("late", ["", "@lateeof"], ids=["eof-with-done", "eof-after-done"])
async def test_connections_are_kept_alive_between_turns(fakes: list[FakeUpstream], late: str) -> None:
    engine = engine_for(fakes[0].base_url)
    for name in ("vllm_text", "ollama_tool_calls", "llamacpp_text"):
        await run(engine, turn(name + late))
    ports = {received.client_port for received in fakes[0].received}
    assert len(ports) == 1, f"each turn opened a new connection: {ports}"


async def test_a_server_that_does_not_stream(fakes: list[FakeUpstream]) -> None:
    engine = engine_for(fakes[0].base_url)
    batches = await run(engine, turn("completion_json"))
    assert assemble(flat(batches)[:-1]) == ("Not streamed, but fine.", [])
    assert finished_of(batches).usage == Usage(11, 0, 6)


async def test_warmup_sends_nothing_upstream(fakes: list[FakeUpstream]) -> None:
    engine = engine_for(fakes[0].base_url)
    batches = await run(engine, turn("vllm_text", instructions="Be brief.", generate=False))
    assert fakes[0].received == []
    finished = finished_of(batches)
    assert finished.usage.output_tokens == 0 and finished.usage.input_tokens > 0


async def test_count_tokens_is_an_estimate_that_grows_with_history(fakes: list[FakeUpstream]) -> None:
    engine = engine_for(fakes[0].base_url)
    short = engine.count_tokens(turn("m", [Message(role="user", content="hi")]))
    long = engine.count_tokens(turn("m", [Message(role="user", content="hi " * 400)], tools=(WEATHER,)))
    assert 0 < short < long
    assert long >= 1200 // 4  # 1,200 bytes of text at four bytes a token
    untranslatable = [Message(role="user", content=[InputText(text="hi"), InputImage(file_id="file-1")])]
    assert engine.count_tokens(turn("m", untranslatable)) > 0  # the turn would fail; counting does not
    assert fakes[0].received == []


async def test_closing_the_turn_early_stops_the_upstream(fakes: list[FakeUpstream]) -> None:
    engine = engine_for(fakes[0].base_url, idle_timeout_s=5.0)
    async with aclosing(engine.stream(turn("vllm_text@stall3"))) as stream:
        first = await anext(stream)
        assert first == [TextDelta("The"), TextDelta(" sky")]
    for _ in range(100):  # the client went away: the upstream handler is cancelled
        if fakes[0].cancelled:
            break
        await asyncio.sleep(0.01)
    assert fakes[0].cancelled == 1


# -- replicas ------------------------------------------------------------------------------------------


async def test_each_cache_key_sticks_to_one_replica(fakes: list[FakeUpstream]) -> None:
    engine = engine_for(*(fake.base_url for fake in fakes))
    keys = [f"owner/lane-{number}" for number in range(12)]
    for _ in range(2):
        for key in keys:
            await run(engine, turn("ollama_text", cache_key=key))
    served: dict[str, set[int]] = {}
    for number, fake in enumerate(fakes):
        for received in fake.received:
            served.setdefault(received.headers["X-Loopwire-Cache-Key"], set()).add(number)
    assert len(served) == len(keys)
    assert all(len(replicas) == 1 for replicas in served.values())
    assert len({next(iter(replicas)) for replicas in served.values()}) > 1  # the keys spread
    for key in keys:
        expected = engine.pool.ranking(key)[0].endpoint
        (number,) = served[affinity_token(key)]
        assert expected.startswith(fakes[number].base_url)


def test_rendezvous_moves_only_the_keys_of_a_removed_replica() -> None:
    urls = [f"http://10.0.0.{number}:8000/v1" for number in range(1, 5)]
    full = OpenAIChatEngine(OpenAIChatSettings(upstreams=tuple(urls)))
    smaller = OpenAIChatEngine(OpenAIChatSettings(upstreams=tuple(urls[:3])))
    keys = [f"key-{number}" for number in range(200)]
    moved = 0
    for key in keys:
        before = full.pool.ranking(key)[0].endpoint
        after = smaller.pool.ranking(key)[0].endpoint
        if before.startswith(urls[3]):
            moved += 1
            assert after == full.pool.ranking(key)[1].endpoint  # the next in its own ranking
        else:
            assert after == before
    assert 0 < moved < len(keys)


async def test_a_refused_replica_is_skipped_and_cools_down(fakes: list[FakeUpstream]) -> None:
    dead = closed_port_url()
    engine = engine_for(dead, fakes[0].base_url)
    key = key_ranked_first(engine, dead + "/chat/completions")
    batches = await run(engine, turn("vllm_text", cache_key=key))
    assert finished_of(batches).usage == Usage(31, 16, 6)
    assert engine.stats.failovers == 1 and len(fakes[0].received) == 1
    assert engine.pool.cooling_down(engine.pool.replicas[0])
    await run(engine, turn("vllm_text", cache_key=key))  # straight to the live replica now
    assert engine.stats.failovers == 1 and engine.stats.requests == 3


async def test_a_5xx_replica_is_skipped_until_its_cooldown_ends(fakes: list[FakeUpstream]) -> None:
    engine = engine_for(fakes[0].base_url, fakes[1].base_url, cooldown_s=0.3)
    key = key_ranked_first(engine, fakes[0].base_url + "/chat/completions")
    fakes[0].script = ["http503"]
    await run(engine, turn("ollama_text", cache_key=key))
    assert (len(fakes[0].received), len(fakes[1].received)) == (1, 1)
    await run(engine, turn("ollama_text", cache_key=key))
    assert (len(fakes[0].received), len(fakes[1].received)) == (1, 2)
    await asyncio.sleep(0.35)
    await run(engine, turn("ollama_text", cache_key=key))  # back to its own replica (and its cache)
    assert (len(fakes[0].received), len(fakes[1].received)) == (2, 2)


async def test_a_cut_before_any_output_fails_over(fakes: list[FakeUpstream]) -> None:
    engine = engine_for(fakes[0].base_url, fakes[1].base_url)
    key = key_ranked_first(engine, fakes[0].base_url + "/chat/completions")
    fakes[0].script = ["vllm_text@drop1"]  # only the role chunk, which produces no delta
    batches = await run(engine, turn("vllm_text", cache_key=key))
    assert assemble(flat(batches)[:-1])[0] == "The sky is blue."
    assert (len(fakes[0].received), len(fakes[1].received)) == (1, 1)


async def test_never_a_retry_after_output(fakes: list[FakeUpstream]) -> None:
    engine = engine_for(fakes[0].base_url, fakes[1].base_url)
    key = key_ranked_first(engine, fakes[0].base_url + "/chat/completions")
    fakes[0].script = ["vllm_text@drop3"]
    error, batches = await fail(engine, turn("vllm_text", cache_key=key))
    assert flat(batches) == [TextDelta("The"), TextDelta(" sky")]
    assert error.code == "upstream_error" and "closed the connection mid-stream" in str(error)
    assert len(fakes[1].received) == 0


async def test_a_4xx_is_the_request_s_fault_and_is_not_retried(fakes: list[FakeUpstream]) -> None:
    engine = engine_for(fakes[0].base_url, fakes[1].base_url)
    key = key_ranked_first(engine, fakes[0].base_url + "/chat/completions")
    error, batches = await fail(engine, turn("http400", cache_key=key))
    assert batches == []
    assert error.code == "upstream_error"
    assert "HTTP 400" in str(error) and "fake upstream answered 400" in str(error)
    assert len(fakes[1].received) == 0
    assert not engine.pool.cooling_down(engine.pool.replicas[0])


async def test_every_replica_down(fakes: list[FakeUpstream]) -> None:
    engine = engine_for(closed_port_url(), closed_port_url())
    error, _ = await fail(engine, turn("vllm_text"))
    assert error.code == "upstream_error" and "none of the 2 upstream replicas" in str(error)
    assert "127.0.0.1" not in str(error)  # clients are not told where the upstreams are
    single = engine_for(closed_port_url())
    error, _ = await fail(single, turn("vllm_text"))
    assert error.code == "upstream_error" and "could not be reached" in str(error)


# -- timeouts and errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("stall", ["stallhead", "stall0"], ids=["no-status-line", "headers-then-nothing"])
async def test_no_first_byte_is_a_timeout_not_a_hang(fakes: list[FakeUpstream], stall: str) -> None:
    engine = engine_for(fakes[0].base_url, first_byte_timeout_s=0.3, idle_timeout_s=5.0)
    started = time.monotonic()
    error, batches = await fail(engine, turn(f"vllm_text@{stall}"))
    assert time.monotonic() - started < 1.5
    assert batches == [] and error.code == "upstream_timeout"


async def test_a_stall_between_chunks_is_a_timeout(fakes: list[FakeUpstream]) -> None:
    engine = engine_for(fakes[0].base_url, idle_timeout_s=0.2)
    started = time.monotonic()
    error, batches = await fail(engine, turn("vllm_text@stall4"))
    assert time.monotonic() - started < 1.5
    assert flat(batches) == [TextDelta("The"), TextDelta(" sky"), TextDelta(" is")]
    assert error.code == "upstream_timeout" and "0.2 s" in str(error)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("llamacpp_error", "Partial", "Context size has been exceeded."),
        ("vllm_error", "", "longer than the maximum model length"),
    ],
)
async def test_errors_inside_the_stream(
    fakes: list[FakeUpstream], name: str, text: str, message: str
) -> None:
    engine = engine_for(fakes[0].base_url, fakes[1].base_url)
    error, batches = await fail(engine, turn(name + "@paced"))
    assert assemble(flat(batches)) == (text, [])
    assert error.code == "upstream_error" and message in str(error)
    assert len(fakes[0].received) + len(fakes[1].received) == 1  # the request's fault: not retried


async def test_a_stream_cut_after_output_without_finish(fakes: list[FakeUpstream]) -> None:
    events = fixture_events("ollama_text")
    assert len(events) == 7
    engine = engine_for(fakes[0].base_url)
    error, batches = await fail(engine, turn("ollama_text@drop4"))
    assert assemble(flat(batches))[0] == "My name is Qwen."
    assert error.code == "upstream_error"


async def test_a_closed_engine_refuses_turns(fakes: list[FakeUpstream]) -> None:
    engine = engine_for(fakes[0].base_url)
    await run(engine, turn("vllm_text"))
    await engine.aclose()
    error, _ = await fail(engine, turn("vllm_text"))
    assert "closed" in str(error)


# -- the factory ---------------------------------------------------------------------------------------


def test_build_engine() -> None:
    sim = build_engine("sim", ttft_ms=5.0)
    assert isinstance(sim, SimEngine) and sim.settings.ttft_ms == 5.0
    chat = build_engine("openai-chat", upstream="http://a:8000/v1,http://b:8000/v1", api_key="k", model="m")
    assert isinstance(chat, OpenAIChatEngine)
    assert chat.settings.endpoints == (
        "http://a:8000/v1/chat/completions",
        "http://b:8000/v1/chat/completions",
    )
    with pytest.raises(ValueError, match="unknown engine"):
        build_engine("vllm-in-process")
    with pytest.raises(ValueError, match="unknown sim option"):
        build_engine("sim", upstream="http://a/v1")
    with pytest.raises(ValueError, match="unknown openai-chat option"):
        build_engine("openai-chat", upstream="http://a/v1", ttft_ms=1.0)
    with pytest.raises(ValueError, match="at least one upstream"):
        build_engine("openai-chat")


async def test_the_default_output_cap_is_dropped_once_when_the_upstream_refuses_it(
    fakes: list[FakeUpstream],
) -> None:
    """vLLM refuses (400) a max_tokens that would not fit its context after the prompt; the cap the client
    did not ask for is then left out, once. The client's own limit is never dropped."""
    engine = engine_for(fakes[0].base_url, default_max_output_tokens=4096)
    fakes[0].script = ["http400", "vllm_text"]
    batches = await run(engine, turn("m"))
    assert assemble(flat(batches)[:-1])[0] == "The sky is blue."
    first, second = fakes[0].bodies()[-2:]
    assert first["max_tokens"] == 4096 and "max_tokens" not in second
    assert engine.stats.uncapped_retries == 1

    fakes[0].script = ["http400", "vllm_text"]
    with pytest.raises(EngineError, match="HTTP 400"):
        await run(engine, turn("m", max_output_tokens=64))
    assert fakes[0].bodies()[-1]["max_tokens"] == 64 and engine.stats.uncapped_retries == 1


@pytest.mark.parametrize(
    ("server", "sizes"),
    [
        ("vllm", " (5000 tokens > 4096)"),
        ("vllm_legacy", " (5000 tokens > 4096)"),
        ("llamaserver", " (4476 tokens > 4096)"),
        ("llamaserver_legacy", ""),
        ("llamacpppython", " (2300 tokens > 2048)"),
        ("openai", " (130532 tokens > 128000)"),
    ],
)
async def test_an_upstream_context_overflow_is_context_length_exceeded_on_no_other_replica(
    fakes: list[FakeUpstream], server: str, sizes: str
) -> None:
    """The prompt does not fit the upstream model: the same refusal would come from every replica, so it is
    sent to none other, no replica cools down, and the default output cap is not dropped for a retry."""
    engine = engine_for(fakes[0].base_url, fakes[1].base_url)
    key = key_ranked_first(engine, fakes[0].base_url + "/chat/completions")
    error, batches = await fail(engine, turn(f"overflow_{server}", cache_key=key))
    assert error.code == "context_length_exceeded" and batches == []
    assert str(error).startswith(f"Your input exceeds the context window of this model{sizes}.")
    assert "The upstream said: " in str(error)
    assert len(fakes[0].received) == 1 and fakes[1].received == []
    assert engine.stats.failovers == 0 and engine.stats.uncapped_retries == 0
    assert finished_of(await run(engine, turn("vllm_text", cache_key=key))).stop_reason == "stop"
    assert len(fakes[0].received) == 2  # the replica is not in cooldown


async def test_an_output_cap_that_does_not_fit_is_no_context_overflow(fakes: list[FakeUpstream]) -> None:
    """vLLM's refusal of a max_tokens that does not fit after a prompt that does: the engine drops its
    default cap and asks once more; a client's own cap is refused as an upstream error."""
    engine = engine_for(fakes[0].base_url)
    error, _ = await fail(engine, turn("overflow_vllm_cap"))
    assert error.code == "upstream_error" and "is too large: 8000" in str(error)
    assert engine.stats.uncapped_retries == 1 and len(fakes[0].received) == 2
    error, _ = await fail(engine, turn("overflow_vllm_cap", max_output_tokens=8000))
    assert error.code == "upstream_error" and len(fakes[0].received) == 3


async def test_an_empty_stream_is_explained_by_the_same_prompt_non_streamed(
    fakes: list[FakeUpstream],
) -> None:
    """llama-cpp-python streams nothing (HTTP 200) for a prompt past its context; asked the same prompt
    non-streamed for one token it says why, and that is the turn's error. Any other answer to that probe
    leaves the empty stream as the error."""
    engine = engine_for(fakes[0].base_url)
    fakes[0].script = ["empty", "overflow_llamacpppython"]
    error, _ = await fail(engine, turn("m"))
    assert error.code == "context_length_exceeded" and "(2300 tokens > 2048)" in str(error)
    probe = fakes[0].bodies()[1]
    assert probe.get("stream") is False and probe["max_tokens"] == 1
    assert probe["messages"] == fakes[0].bodies()[0]["messages"]

    fakes[0].script = ["empty", "completion_json"]
    error, _ = await fail(engine, turn("m"))
    assert error.code == "upstream_error" and "empty stream" in str(error)
    assert len(fakes[0].received) == 4
