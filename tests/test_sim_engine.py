"""The simulated engine: tokenizer, template, schema arguments, prefix cache, fast path and latency model."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from loopwire.engines.base import (
    EngineDelta,
    EngineError,
    EngineRequest,
    Finished,
    NamedToolChoice,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallStart,
    ToolChoice,
    ToolSpec,
)
from loopwire.engines.sim import SimEngine, SimRenderState, SimSettings
from loopwire.engines.sim import engine as engine_module
from loopwire.engines.sim.prefix_cache import PrefixCache, chain_hash, header_hash
from loopwire.engines.sim.renderer import GENERATION_PROMPT_TOKENS, ChatRenderer, item_pieces
from loopwire.engines.sim.schema_args import generate_arguments
from loopwire.engines.sim.tokenizer import count_tokens, split_tokens
from loopwire.protocol.compaction import encode_summary
from loopwire.protocol.context import EMPTY_CONTEXT, Context
from loopwire.protocol.items import (
    Compaction,
    FunctionCall,
    FunctionCallOutput,
    InputItem,
    InputText,
    ItemReference,
    Message,
    OutputText,
    Reasoning,
)

WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
}
SEARCH: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "maxLength": 12},
        "limit": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 5},
        "score": {"type": "number", "minimum": 0.5, "maximum": 0.75},
        "exact": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}, "maxItems": 2},
        "filter": {
            "type": "object",
            "properties": {
                "after": {"type": "string", "format": "date"},
                "owner": {"type": ["string", "null"]},
                "nested": {
                    "type": "object",
                    "properties": {"deep": {"type": "number"}},
                    "required": ["deep"],
                },
            },
            "required": ["after", "nested"],
        },
        "mode": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 10, "maximum": 10}]},
    },
    "required": ["query", "limit", "score", "exact", "tags", "filter", "mode"],
}
TOOLS = (
    ToolSpec("get_weather", "Current weather for a city.", WEATHER),
    ToolSpec("search", "Search the index.", SEARCH),
    ToolSpec("ping", None, None),
)


# -- helpers -------------------------------------------------------------------------------------------------


def schema_errors(value: Any, schema: dict[str, Any] | None, path: str = "$") -> list[str]:
    """A small JSON-schema validator for the keywords the argument generator claims to honour."""
    if not schema:
        return []
    if "const" in schema:
        return [] if value == schema["const"] else [f"{path}: {value!r} != const"]
    if "enum" in schema:
        return [] if value in schema["enum"] else [f"{path}: {value!r} not in enum"]
    for keyword in ("anyOf", "oneOf"):
        if keyword in schema:
            ok = any(not schema_errors(value, option, path) for option in schema[keyword])
            return [] if ok else [f"{path}: matches no {keyword} option"]
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    checks: dict[str | None, Callable[[Any], bool]] = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
        None: lambda v: True,
    }
    if not any(checks[kind](value) for kind in kinds):
        return [f"{path}: {value!r} is not {kinds}"]
    errors: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        errors += [f"{path}: missing {name}" for name in schema.get("required", []) if name not in value]
        errors += [f"{path}: unknown {name}" for name in value if name not in properties]
        for name, item in value.items():
            errors += schema_errors(item, properties.get(name), f"{path}.{name}")
    elif isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", 10**9):
            errors.append(f"{path}: {len(value)} items")
        for index, item in enumerate(value):
            errors += schema_errors(item, schema.get("items"), f"{path}[{index}]")
    elif isinstance(value, str):
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 10**9):
            errors.append(f"{path}: length {len(value)}")
        if schema.get("format") == "date" and len(value.split("-")) != 3:
            errors.append(f"{path}: {value!r} is not a date")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < minimum")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > maximum")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{path}: {value} <= exclusiveMinimum")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            errors.append(f"{path}: {value} >= exclusiveMaximum")
    return errors


def request(
    history: Context,
    *,
    prefix: Finished | None = None,
    tools: Sequence[ToolSpec] = TOOLS,
    tool_choice: ToolChoice = "auto",
    **kwargs: Any,
) -> EngineRequest:
    state = prefix.render if prefix is not None else None
    return EngineRequest(
        model="sim",
        history=history,
        instructions=kwargs.pop("instructions", "You are a terse assistant."),
        tools=tuple(tools),
        tool_choice=tool_choice,
        prefix=state,
        prefix_items=state.items if isinstance(state, SimRenderState) else 0,
        **kwargs,
    )


async def run(engine: SimEngine, req: EngineRequest) -> tuple[list[EngineDelta], Finished]:
    deltas = [delta async for batch in engine.stream(req) for delta in batch]
    assert sum(isinstance(delta, Finished) for delta in deltas) == 1
    finished = deltas[-1]
    assert isinstance(finished, Finished)
    return deltas[:-1], finished


def output_items(deltas: Sequence[EngineDelta], turn: int = 0) -> list[InputItem]:
    """The output items as the session would store them and send them back as history (ids set)."""
    items: list[InputItem] = []
    text: list[str] = []
    for delta in deltas:
        if isinstance(delta, TextDelta):
            text.append(delta.text)
        elif isinstance(delta, ToolCallStart):
            items.append(FunctionCall(call_id=delta.call_id, name=delta.name, arguments="", id=f"fc_{turn}"))
        elif isinstance(delta, ToolArgumentsDelta):
            call = items[-1]
            assert isinstance(call, FunctionCall)
            call.arguments += delta.delta
    if text:
        content: list[Any] = [OutputText(text="".join(text))]
        items.insert(0, Message(role="assistant", content=content, id=f"msg_{turn}", status="completed"))
    return items


def user(text: str) -> Message:
    return Message(role="user", content=[InputText(text=text)])


def full_render_hash(history: Context, instructions: str | None, tools: Sequence[ToolSpec]) -> bytes:
    renderer = ChatRenderer()
    chain = header_hash(renderer.header(instructions, tools).text)
    for item in history:
        chain = chain_hash(chain, renderer.item(item).text)
    return chain


# -- tokenizer, template, schema arguments -------------------------------------------------------------------


def test_tokenizer_round_trips_and_grows_with_text() -> None:
    text = 'Hello, wörld!  {"a": [1, 2]}\n\n<|im_end|>\nsupercalifragilistic tail'
    tokens = split_tokens(text)
    assert "".join(tokens) == text
    assert count_tokens(text) == len(tokens)
    assert "\n\n<|im_end|>" in tokens  # a special token is one token; whitespace rides with the next
    assert "\nsupercalifragilistic" in tokens and "!" in tokens and " [" in tokens
    assert count_tokens("") == 0
    assert count_tokens(text * 10) > 9 * count_tokens(text)


def test_renderer_covers_every_item_and_ignores_ids() -> None:
    renderer = ChatRenderer()
    summary = encode_summary("we fixed the bug in parser.py")
    items: list[InputItem] = [
        Message(role="developer", content="dev note"),
        FunctionCall(call_id="c1", name="search", arguments='{"q": 1}'),
        FunctionCallOutput(call_id="c1", output="result text"),
        Reasoning(id="rs_1", summary=[{"type": "summary_text", "text": "thinking hard"}]),
        ItemReference(id="msg_42"),
        Compaction(encrypted_content=summary),
        Compaction(encrypted_content="not ours"),
    ]
    texts = [renderer.item(item).text for item in items]
    assert texts[0] == "<|im_start|>developer\ndev note<|im_end|>\n"
    assert '"name": "search", "arguments": {"q": 1}' in texts[1]
    assert "result text" in texts[2] and texts[2].startswith("<|im_start|>tool\n")
    assert "thinking hard" in texts[3]
    assert "msg_42" in texts[4]
    assert "we fixed the bug in parser.py" in texts[5]
    assert texts[6].startswith("<|im_start|>system\n")
    assert renderer.items_rendered == len(items)
    plain = Message(role="assistant", content=[OutputText(text="hi there")])
    stored = Message(role="assistant", content="hi there", id="msg_1", status="completed", phase="final")
    assert renderer.item(plain) == renderer.item(stored)
    for item in items:
        pieces = item_pieces(item)
        assert renderer.item(item).tokens == sum(count_tokens(piece) for piece in pieces)


@pytest.mark.parametrize("schema", [WEATHER, SEARCH])
def test_schema_arguments_validate(schema: dict[str, Any]) -> None:
    seen: set[str] = set()
    for seed in range(300):
        value = generate_arguments(schema, random.Random(seed))
        assert schema_errors(value, schema) == [], (seed, value)
        assert json.loads(json.dumps(value)) == value
        seen.add(json.dumps(value, sort_keys=True))
    assert len(seen) > 50  # really drawn from the seed, not a constant
    assert generate_arguments(schema, random.Random(7)) == generate_arguments(schema, random.Random(7))


def test_schema_arguments_edge_cases() -> None:
    rng = random.Random(1)
    assert generate_arguments(None, rng) == {}
    assert generate_arguments({}, rng) == {}
    assert generate_arguments({"type": "object"}, rng) == {}
    assert generate_arguments({"type": "string"}, rng) == {}
    recursive: dict[str, Any] = {"type": "object", "properties": {}, "required": ["child"]}
    recursive["properties"]["child"] = recursive
    assert isinstance(generate_arguments(recursive, rng), dict)
    constant = {"type": "object", "properties": {"k": {"const": 3}}, "required": ["k"]}
    assert generate_arguments(constant, rng) == {"k": 3}


# -- prefix cache --------------------------------------------------------------------------------------------


def test_prefix_cache_is_a_bounded_lru() -> None:
    cache = PrefixCache(2)
    cache.put(b"a", 10)
    cache.put(b"b", 20)
    assert cache.get(b"a") == 10  # a is now the most recent
    cache.put(b"c", 30)
    assert b"b" not in cache and len(cache) == 2
    assert cache.longest_hit([b"z", b"c", b"a"]) == 30
    assert cache.longest_hit([b"z"]) == 0
    cache.put(b"c", 5)  # a boundary never loses tokens it holds
    assert cache.get(b"c") == 30


# -- generation ----------------------------------------------------------------------------------------------


async def test_text_is_deterministic_per_seed_and_context() -> None:
    history = EMPTY_CONTEXT.extend([user("tell me something")])
    a, finished_a = await run(SimEngine(SimSettings(seed=3)), request(history))
    b, _ = await run(SimEngine(SimSettings(seed=3)), request(history))
    c, _ = await run(SimEngine(SimSettings(seed=4)), request(history))
    d, _ = await run(SimEngine(SimSettings(seed=3)), request(history.extend([user("more")])))
    assert a == b
    assert a != c and a != d
    assert all(isinstance(delta, TextDelta) for delta in a)
    assert len(a) == 1  # at zero latency every word is due at once: one delta
    words = SimSettings().default_output_tokens - 1
    assert isinstance(a[0], TextDelta) and len(a[0].text.split()) == words
    assert finished_a.usage.output_tokens == SimSettings().default_output_tokens
    assert finished_a.stop_reason == "stop"
    paced, _ = await run(SimEngine(SimSettings(seed=3, decode_tps=1_000_000)), request(history))
    assert len(paced) == words  # paced decoding streams one delta per word, with the same text
    assert "".join(d.text for d in paced if isinstance(d, TextDelta)) == a[0].text


@pytest.mark.parametrize("choice", ["auto", "none"])
async def test_auto_and_none_answer_with_text(choice: ToolChoice) -> None:
    deltas, finished = await run(SimEngine(), request(EMPTY_CONTEXT.extend([user("hi")]), tool_choice=choice))
    assert deltas and all(isinstance(delta, TextDelta) for delta in deltas)
    assert finished.stop_reason == "stop"


async def test_required_tool_call_arguments_match_schema() -> None:
    names: set[str] = set()
    for seed in range(40):
        history = EMPTY_CONTEXT.extend([user(f"do something {seed}")])
        deltas, finished = await run(
            SimEngine(SimSettings(seed=seed)), request(history, tool_choice="required")
        )
        assert finished.stop_reason == "tool_calls"
        start = deltas[0]
        assert isinstance(start, ToolCallStart) and start.call_id.startswith("call_")
        assert all(isinstance(delta, ToolArgumentsDelta) for delta in deltas[1:])
        assert len(deltas) == 2  # at zero latency the arguments are due at once
        arguments = json.loads("".join(d.delta for d in deltas[1:] if isinstance(d, ToolArgumentsDelta)))
        if seed % 10 == 0:  # paced, the same arguments stream in several chunks
            paced, _ = await run(
                SimEngine(SimSettings(seed=seed, decode_tps=1_000_000)),
                request(history, tool_choice="required"),
            )
            assert len(paced) > 2
            assert "".join(d.delta for d in paced if isinstance(d, ToolArgumentsDelta)) == json.dumps(
                arguments, ensure_ascii=False
            )
        schema = {tool.name: tool.parameters for tool in TOOLS}[start.name]
        assert schema_errors(arguments, schema) == []
        names.add(start.name)
    assert names == {tool.name for tool in TOOLS}


async def test_named_tool_choice_and_parallel_calls() -> None:
    history = EMPTY_CONTEXT.extend([user("weather?")])
    deltas, _ = await run(SimEngine(), request(history, tool_choice=NamedToolChoice("get_weather")))
    starts = [delta for delta in deltas if isinstance(delta, ToolCallStart)]
    assert [start.name for start in starts] == ["get_weather"]

    engine = SimEngine(SimSettings(parallel_calls=3))
    deltas, finished = await run(engine, request(history, tool_choice="required"))
    starts = [delta for delta in deltas if isinstance(delta, ToolCallStart)]
    assert len(starts) == 3 and len({start.call_id for start in starts}) == 3
    assert isinstance(finished.render, SimRenderState) and finished.render.items == 4
    following = history.extend(output_items(deltas))
    assert finished.render.chain_hash == full_render_hash(following, "You are a terse assistant.", TOOLS)
    assert finished.render.token_count == finished.usage.input_tokens + finished.usage.output_tokens
    assert engine.count_tokens(request(following, generate=False)) == finished.render.token_count
    deltas, _ = await run(engine, request(history, tool_choice="required", parallel_tool_calls=False))
    assert sum(isinstance(delta, ToolCallStart) for delta in deltas) == 1

    with pytest.raises(EngineError):
        await run(SimEngine(), request(history, tool_choice=NamedToolChoice("nope")))


async def test_max_output_tokens_cuts_with_length() -> None:
    engine = SimEngine()
    history = EMPTY_CONTEXT.extend([user("a long answer please")])
    deltas, finished = await run(engine, request(history, max_output_tokens=5))
    assert len(deltas) == 1 and finished.stop_reason == "length"
    assert isinstance(deltas[0], TextDelta) and len(deltas[0].text.split()) == 5
    assert finished.usage.output_tokens == 5
    # the cut answer comes back as history with its end-of-turn token: the render counts it, the KV does not
    state = finished.render
    assert isinstance(state, SimRenderState)
    assert state.token_count == finished.usage.input_tokens + 5 + 1
    following = history.extend([*output_items(deltas), user("go on")])
    _, second = await run(engine, request(following, prefix=finished))
    assert second.usage.cached_tokens == finished.usage.input_tokens + finished.usage.output_tokens
    _, natural = await run(SimEngine(), request(history, max_output_tokens=100))
    assert natural.stop_reason == "stop"


# -- render state, fast path and prefix cache ----------------------------------------------------------------


async def test_incremental_chain_hash_equals_full_render() -> None:
    engine = SimEngine()
    history = EMPTY_CONTEXT.extend([user("first question")])
    finished: Finished | None = None
    for turn in range(6):
        choice: ToolChoice = "required" if turn % 2 else "auto"
        previous = finished
        deltas, finished = await run(engine, request(history, prefix=finished, tool_choice=choice))
        if previous is not None:  # the whole previous turn, its answer included, is a cache hit
            expected = previous.usage.input_tokens + previous.usage.output_tokens
            assert finished.usage.cached_tokens == expected
        outputs = output_items(deltas, turn)
        history = history.extend(outputs)
        state = finished.render
        assert isinstance(state, SimRenderState) and state.items == history.length
        assert state.chain_hash == full_render_hash(history, "You are a terse assistant.", TOOLS)
        # a fresh engine rendering the whole history (slow path) agrees on hash and token count
        _, warm = await run(SimEngine(), request(history, generate=False))
        assert isinstance(warm.render, SimRenderState)
        assert warm.render.chain_hash == state.chain_hash
        assert warm.render.token_count == state.token_count
        new: InputItem = user(f"question {turn}")
        if isinstance(outputs[-1], FunctionCall):
            new = FunctionCallOutput(call_id=outputs[-1].call_id, output=f"result {turn}")
        history = history.extend([new])
    assert engine.stats.fast_path_turns == 5 and engine.stats.slow_path_turns == 1


async def test_fast_path_renders_only_new_items_and_matches_slow_path() -> None:
    engine = SimEngine()
    history = EMPTY_CONTEXT.extend([user("x" * 5000)])
    finished: Finished | None = None
    for turn in range(30):
        before = engine.stats.history_items_rendered
        deltas, finished = await run(engine, request(history, prefix=finished))
        # the prefix covers the history and the previous answer: only the new question is rendered
        assert engine.stats.history_items_rendered - before == 1, turn
        assert engine.stats.output_items_rendered == turn + 1
        history = history.extend([*output_items(deltas, turn), user(f"{turn} " + "y" * 5000)])
    assert engine.stats.fast_path_turns == 29

    slow_engine = SimEngine()
    fast_deltas, fast = await run(engine, request(history, prefix=finished))
    slow_deltas, slow = await run(slow_engine, request(history))
    assert slow_engine.stats.history_items_rendered == history.length
    assert fast_deltas == slow_deltas
    assert fast.usage.input_tokens == slow.usage.input_tokens
    assert isinstance(fast.render, SimRenderState) and isinstance(slow.render, SimRenderState)
    assert (fast.render.chain_hash, fast.render.token_count) == (
        slow.render.chain_hash,
        slow.render.token_count,
    )


async def test_header_change_falls_back_to_the_slow_path() -> None:
    engine = SimEngine()
    history = EMPTY_CONTEXT.extend([user("hello")])
    deltas, first = await run(engine, request(history))
    history = history.extend([*output_items(deltas), user("again")])
    deltas, second = await run(engine, request(history, prefix=first, instructions="Now be verbose."))
    assert engine.stats.slow_path_turns == 2
    assert second.usage.cached_tokens == 0  # a new system block invalidates every boundary after it
    assert isinstance(second.render, SimRenderState)
    history = history.extend(output_items(deltas))
    assert second.render.chain_hash == full_render_hash(history, "Now be verbose.", TOOLS)


@pytest.mark.parametrize("prefix_cache", [True, False])
async def test_cached_tokens_on_the_second_turn(prefix_cache: bool) -> None:
    engine = SimEngine(SimSettings(prefix_cache=prefix_cache))
    history = EMPTY_CONTEXT.extend([user("what is the capital of France?")])
    deltas, first = await run(engine, request(history))
    assert first.usage.cached_tokens == 0
    assert first.usage.input_tokens == engine.count_tokens(request(history))
    history = history.extend([*output_items(deltas), user("and of Spain?")])
    _, second = await run(engine, request(history, prefix=first))
    expected = first.usage.input_tokens + first.usage.output_tokens if prefix_cache else 0
    assert second.usage.cached_tokens == expected
    assert second.usage.input_tokens == second.render.token_count - second.usage.output_tokens  # type: ignore[union-attr]
    # the slow path finds the same longest boundary by walking the chain
    _, slow = await run(engine, request(history))
    assert slow.usage.cached_tokens == (
        second.usage.input_tokens - GENERATION_PROMPT_TOKENS if prefix_cache else 0
    )


async def test_warmup_caches_the_prefix_without_generating() -> None:
    engine = SimEngine()
    history = EMPTY_CONTEXT.extend([user("warm me up")])
    deltas = [delta async for batch in engine.stream(request(history, generate=False)) for delta in batch]
    assert len(deltas) == 1
    warm = deltas[0]
    assert isinstance(warm, Finished) and warm.usage.output_tokens == 0
    assert isinstance(warm.render, SimRenderState) and warm.render.items == 1
    assert warm.render.token_count == warm.usage.input_tokens
    _, real = await run(engine, request(history, prefix=warm))
    assert real.usage.cached_tokens == warm.usage.input_tokens
    assert real.usage.input_tokens == warm.usage.input_tokens + GENERATION_PROMPT_TOKENS


async def test_closed_engine_refuses() -> None:
    engine = SimEngine()
    await engine.aclose()
    with pytest.raises(EngineError):
        await run(engine, request(EMPTY_CONTEXT.extend([user("hi")])))


# -- latency model -------------------------------------------------------------------------------------------


async def test_ttft_and_decode_are_lower_bounds() -> None:
    engine = SimEngine(SimSettings(ttft_ms=50, decode_tps=500))
    history = EMPTY_CONTEXT.extend([user("slow please")])
    started = time.perf_counter()
    first_at: float | None = None
    async for batch in engine.stream(request(history)):
        if first_at is None:
            first_at = time.perf_counter()
        for delta in batch:
            if isinstance(delta, Finished):
                finished = delta
    ended = time.perf_counter()
    assert first_at is not None and first_at - started >= 0.050
    tokens = finished.usage.output_tokens
    assert ended - started >= 0.050 + (tokens - 1) / 500
    assert finished.timings["ttft_ms"] >= 50


async def test_prefill_time_scales_with_uncached_tokens() -> None:
    engine = SimEngine(SimSettings(prefill_tps=20_000))
    history = EMPTY_CONTEXT.extend([user("word " * 400)])
    started = time.perf_counter()
    _, finished = await run(engine, request(history, generate=False))
    uncached = finished.usage.input_tokens - finished.usage.cached_tokens
    assert uncached > 400
    assert time.perf_counter() - started >= uncached / 20_000


async def test_zero_latency_never_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    async def forbidden(deadline: float) -> None:
        raise AssertionError(f"asked to sleep until {deadline}")

    monkeypatch.setattr(engine_module, "_sleep_until", forbidden)
    engine = SimEngine()
    history = EMPTY_CONTEXT.extend([user("fast")])
    _, finished = await run(engine, request(history, tool_choice="required"))
    await run(engine, request(history, generate=False))
    assert finished.stop_reason == "tool_calls"
