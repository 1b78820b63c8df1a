"""The local engine on a tiny randomly initialised model: KV reuse per lane (delta-only prefill, the same
greedy tokens as a full prefill), the memory budget and eviction, sampling, tool calls, cancellation and
model-directory errors. Nothing is downloaded: the model and tokenizer are built by the fixtures."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, WEATHER_PARAMETERS, WEATHER_PROMPT

pytest.importorskip("torch")
pytest.importorskip("transformers")

from loopwire.engines.base import (
    EngineDelta,
    EngineRequest,
    Finished,
    NamedToolChoice,
    RenderState,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallStart,
    ToolChoice,
    ToolSpec,
)
from loopwire.engines.factory import build_engine
from loopwire.engines.local import LocalEngine, LocalRenderState, LocalSettings
from loopwire.engines.local.generation import common_prefix
from loopwire.engines.local.tool_parser import ToolCallParser
from loopwire.protocol.context import EMPTY_CONTEXT, Context
from loopwire.protocol.items import (
    FunctionCall,
    FunctionCallOutput,
    InputItem,
    Message,
    OutputText,
)

WEATHER = ToolSpec("get_weather", "Weather for a city.", WEATHER_PARAMETERS)


@dataclass
class TurnResult:
    deltas: list[EngineDelta]
    finished: Finished
    output: list[InputItem]

    @property
    def text(self) -> str:
        return "".join(delta.text for delta in self.deltas if isinstance(delta, TextDelta))


def output_items(deltas: Sequence[EngineDelta]) -> list[InputItem]:
    """The output items the core builds from these deltas (as core/turn.py does)."""
    items: list[InputItem] = []
    text: list[str] = []
    call: list[Any] | None = None
    for delta in deltas:
        if isinstance(delta, TextDelta):
            if call is not None:
                items.append(FunctionCall(call_id=call[0], name=call[1], arguments="".join(call[2:])))
                call = None
            text.append(delta.text)
        elif isinstance(delta, ToolCallStart):
            if text:
                items.append(Message(role="assistant", content=[OutputText(text="".join(text))]))
                text = []
            if call is not None:
                items.append(FunctionCall(call_id=call[0], name=call[1], arguments="".join(call[2:])))
            call = [delta.call_id, delta.name]
        elif isinstance(delta, ToolArgumentsDelta):
            assert call is not None
            call.append(delta.delta)
    if text:
        items.append(Message(role="assistant", content=[OutputText(text="".join(text))]))
    if call is not None:
        items.append(FunctionCall(call_id=call[0], name=call[1], arguments="".join(call[2:])))
    return items


async def run(
    engine: LocalEngine,
    history: Context,
    *,
    prefix: RenderState | None = None,
    prefix_items: int = 0,
    **fields: Any,
) -> TurnResult:
    fields.setdefault("max_output_tokens", 12)
    request = EngineRequest(model="tiny", history=history, prefix=prefix, prefix_items=prefix_items, **fields)
    deltas: list[EngineDelta] = []
    async for batch in engine.stream(request):
        deltas.extend(batch)
    finished = deltas.pop()
    assert isinstance(finished, Finished)
    assert not any(isinstance(delta, Finished) for delta in deltas)
    return TurnResult(deltas, finished, output_items(deltas))


def user(text: str) -> Message:
    return Message(role="user", content=text)


@pytest.fixture(scope="module")
def engine(local_model_dir: Path) -> LocalEngine:
    return LocalEngine(LocalSettings(model=str(local_model_dir)))


@pytest.fixture(scope="module")
def full_prefill(engine: LocalEngine) -> LocalEngine:
    """The same loaded model with KV reuse off: every turn prefills its whole prompt."""
    return LocalEngine(replace(engine.settings, kv_reuse=False), loaded=engine.loaded)


TOOL_OUTPUT = "total 48\n-rw-r--r-- 1 dev dev 1200 README.md\n" * 6


async def test_continuations_prefill_only_what_differs_and_match_a_full_prefill(
    engine: LocalEngine, full_prefill: LocalEngine
) -> None:
    history = EMPTY_CONTEXT
    state: RenderState | None = None
    previous_prompt_tokens = 0
    inputs: list[list[InputItem]] = [
        [user("List the files, please.")],
        [user("And the README?"), FunctionCallOutput(call_id="call_x", output=TOOL_OUTPUT)],
        [user("Summarise the weather in Paris.")],
        [user("Thanks. One more question about the tests.")],
    ]
    # the output above is the model's own, so call_x is only a tool output in the template's eyes
    for turn, new_items in enumerate(inputs):
        parent_items = history.length
        history = history.extend(new_items)
        reused = await run(engine, history, prefix=state, prefix_items=parent_items, instructions="Be brief.")
        fresh = await run(full_prefill, history, instructions="Be brief.")
        prompt = engine.render(EngineRequest(model="tiny", history=history, instructions="Be brief."))
        assert reused.finished.usage.input_tokens == len(prompt) == fresh.finished.usage.input_tokens
        assert [type(delta) for delta in reused.deltas] == [type(delta) for delta in fresh.deltas]
        assert reused.text == fresh.text, f"turn {turn}: reuse changed the greedy output"
        assert fresh.finished.usage.cached_tokens == 0
        assert full_prefill.stats.last_prefilled == len(prompt)
        if state is None:
            assert engine.stats.last_reused == 0
        else:
            assert isinstance(state, LocalRenderState)
            expected = common_prefix(state.ids, prompt)
            # at least the whole previous prompt is reused; the previous output as far as the template
            # re-renders it as the same tokens
            assert expected >= previous_prompt_tokens
            assert engine.stats.last_reused == expected == reused.finished.usage.cached_tokens
            assert engine.stats.last_prefilled == len(prompt) - expected
        previous_prompt_tokens = len(prompt)
        state = reused.finished.render
        assert isinstance(state, LocalRenderState)
        assert state.token_count == len(prompt) + reused.finished.usage.output_tokens - 1  # last not fed
        history = history.extend(reused.output)
    print("reuse per turn (reused, prefilled):", engine.stats.history[-len(inputs) :])


async def test_a_warmup_then_a_turn_prefills_exactly_the_new_tokens(engine: LocalEngine) -> None:
    history = EMPTY_CONTEXT.extend([user("Read the file.")])
    warm = await run(engine, history, generate=False, instructions="Be brief.", tools=(WEATHER,))
    assert warm.deltas == [] and warm.finished.usage.output_tokens == 0
    state = warm.finished.render
    assert isinstance(state, LocalRenderState) and engine.pool.holds(state)
    extended_before = engine.stats.extended
    longer = history.extend([user("Now the weather.")])
    turn = await run(engine, longer, prefix=state, prefix_items=1, instructions="Be brief.", tools=(WEATHER,))
    prompt = engine.render(
        EngineRequest(model="tiny", history=longer, instructions="Be brief.", tools=(WEATHER,))
    )
    assert tuple(prompt[: state.token_count]) == state.ids  # the template renders append-only here
    assert turn.finished.usage.cached_tokens == state.token_count
    assert engine.stats.last_prefilled == len(prompt) - state.token_count
    assert engine.stats.extended == extended_before + 1
    assert not engine.pool.holds(state)  # the continuation took the parent's cache over


async def test_changed_instructions_reuse_the_common_prefix_only(
    engine: LocalEngine, full_prefill: LocalEngine
) -> None:
    history = EMPTY_CONTEXT.extend([user("Hello there.")])
    first = await run(engine, history, instructions="Be brief.")
    later = history.extend(first.output).extend([user("Again.")])
    second = await run(
        engine, later, prefix=first.finished.render, prefix_items=2, instructions="Be very verbose."
    )
    state = first.finished.render
    assert isinstance(state, LocalRenderState)
    prompt = engine.render(EngineRequest(model="tiny", history=later, instructions="Be very verbose."))
    shared = common_prefix(state.ids, prompt)
    assert 0 < shared < len(state.ids) // 2  # the system block diverges early
    assert second.finished.usage.cached_tokens == shared
    assert engine.stats.cropped >= 1
    reference = await run(full_prefill, later, instructions="Be very verbose.")
    assert second.text == reference.text  # the cache was cropped to the shared prefix, nothing stale kept


async def test_an_evicted_lane_re_prefills_and_gives_the_same_output(
    engine: LocalEngine, full_prefill: LocalEngine
) -> None:
    one = await run(engine, EMPTY_CONTEXT.extend([user("Lane A starts here.")]))
    assert isinstance(one.finished.render, LocalRenderState)
    lane_bytes = engine.pool.total
    assert lane_bytes > 0
    tight = LocalEngine(replace(engine.settings, kv_budget_bytes=int(lane_bytes * 1.5)), loaded=engine.loaded)
    lanes: dict[str, tuple[Context, RenderState | None]] = {}
    for lane in ("a", "b"):
        history = EMPTY_CONTEXT.extend([user(f"Lane {lane} starts here.")])
        result = await run(tight, history)
        lanes[lane] = (history.extend(result.output), result.finished.render)
    state_a = lanes["a"][1]
    state_b = lanes["b"][1]
    assert isinstance(state_a, LocalRenderState) and isinstance(state_b, LocalRenderState)
    assert not tight.pool.holds(state_a) and tight.pool.holds(state_b)
    assert tight.pool.total <= tight.pool.max_bytes
    assert tight.pool.stats.evicted == 1
    history_a = lanes["a"][0].extend([user("Continue lane A.")])
    again = await run(tight, history_a, prefix=state_a, prefix_items=history_a.length - 1)
    assert again.finished.usage.cached_tokens == 0 and tight.stats.last_reused == 0
    reference = await run(full_prefill, history_a)
    assert again.text == reference.text
    assert again.finished.usage.input_tokens == reference.finished.usage.input_tokens

    nothing = LocalEngine(replace(engine.settings, kv_budget_bytes=0), loaded=engine.loaded)
    kept = await run(nothing, history_a)
    assert len(nothing.pool) == 0 and nothing.pool.stats.refused == 1
    assert kept.text == reference.text


async def test_sampling_respects_max_output_tokens_and_top_p(engine: LocalEngine) -> None:
    history = EMPTY_CONTEXT.extend([user("Tell me a long story about the weather.")])
    for limit in (1, 3, 7):
        sampled = await run(engine, history, temperature=1.5, top_p=0.95, max_output_tokens=limit)
        usage = sampled.finished.usage
        assert 1 <= usage.output_tokens <= limit
        assert sampled.finished.stop_reason == ("length" if usage.output_tokens == limit else "stop")
    long = await run(engine, history, temperature=1.5, max_output_tokens=40)
    greedy = await run(engine, history, max_output_tokens=40)
    # a nucleus this small holds only the most likely token: sampling becomes greedy decoding
    narrow = await run(engine, history, temperature=1.5, top_p=1e-6, max_output_tokens=40)
    assert narrow.text == greedy.text
    assert long.text != greedy.text  # 40 tokens at temperature 1.5 on a random model


async def test_count_tokens_is_the_rendered_prompt(engine: LocalEngine) -> None:
    history = EMPTY_CONTEXT.extend([user("How many tokens is this?")])
    request = EngineRequest(model="tiny", history=history, tools=(WEATHER,), max_output_tokens=2)
    counted = engine.count_tokens(request)
    result = await run(engine, history, tools=(WEATHER,), max_output_tokens=2)
    assert counted == result.finished.usage.input_tokens > 20


async def test_a_cancelled_turn_stops_and_hands_the_cache_back(engine: LocalEngine) -> None:
    history = EMPTY_CONTEXT.extend([user("Start a lane.")])
    first = await run(engine, history)
    parent = first.finished.render
    assert isinstance(parent, LocalRenderState) and engine.pool.holds(parent)
    turns_before = engine.stats.turns
    longer = history.extend(first.output).extend([user("Write for a very long time.")])
    request = EngineRequest(
        model="tiny", history=longer, prefix=parent, prefix_items=2, max_output_tokens=3000
    )
    stream = engine.stream(request)
    batch = await anext(stream)
    assert batch and not isinstance(batch[-1], Finished)
    await stream.aclose()
    # the worker sees the flag at its next token, crops the cache to what the parent covers and gives it back
    for _ in range(200):
        if engine.pool.holds(parent):
            break
        await asyncio.sleep(0.01)
    assert engine.pool.holds(parent)
    assert engine.stats.turns == turns_before + 1
    after = await run(engine, longer, prefix=parent, prefix_items=2)
    assert after.finished.usage.cached_tokens == common_prefix(
        parent.ids, engine.render(EngineRequest(model="tiny", history=longer))
    )


def test_tool_call_parser_splits_text_and_calls_across_chunks() -> None:
    parser = ToolCallParser(enabled=True)
    text = 'Checking now.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    deltas: list[EngineDelta] = []
    for start in range(0, len(text), 3):
        deltas.extend(parser.feed(text[start : start + 3]))
    deltas.extend(parser.finish())
    assert "".join(d.text for d in deltas if isinstance(d, TextDelta)) == "Checking now."
    starts = [d for d in deltas if isinstance(d, ToolCallStart)]
    assert [s.name for s in starts] == ["get_weather"] and starts[0].call_id.startswith("call_")
    args = "".join(d.delta for d in deltas if isinstance(d, ToolArgumentsDelta))
    assert json.loads(args) == {"city": "Paris"}
    assert parser.calls == 1

    broken = ToolCallParser(enabled=True)
    out = broken.feed("a <tool_call>not json</tool_call> b <tool_") + broken.finish()
    text = "".join(d.text for d in out if isinstance(d, TextDelta))
    assert text == "a<tool_call>not json</tool_call> b <tool_"
    assert broken.calls == 0
    off = ToolCallParser(enabled=False)
    assert off.feed("<tool_call>{}</tool_call>") == [TextDelta("<tool_call>{}</tool_call>")]


async def test_a_taught_model_calls_a_tool_and_its_continuation_reuses_everything(
    taught_model_dir: Path,
) -> None:
    engine = LocalEngine(LocalSettings(model=str(taught_model_dir)))
    history = EMPTY_CONTEXT.extend([user(WEATHER_PROMPT)])
    result = await run(engine, history, tools=(WEATHER,), max_output_tokens=60)
    assert result.finished.stop_reason == "tool_calls"
    calls = [item for item in result.output if isinstance(item, FunctionCall)]
    assert [(call.name, json.loads(call.arguments)) for call in calls] == [("get_weather", {"city": "Paris"})]
    assert result.text == ""
    state = result.finished.render
    assert isinstance(state, LocalRenderState)
    later = history.extend(result.output).extend(
        [FunctionCallOutput(call_id=calls[0].call_id, output="Sunny, 21 C.")]
    )
    follow = await run(engine, later, prefix=state, prefix_items=1, tools=(WEATHER,), max_output_tokens=4)
    # the generated call re-renders as the very tokens the model produced: everything fed is reused
    assert follow.finished.usage.cached_tokens == state.token_count
    assert engine.stats.extended >= 1

    no_tools = await run(engine, history, tools=(WEATHER,), tool_choice="none", max_output_tokens=60)
    assert "<tool_call>" in no_tools.text and no_tools.finished.stop_reason == "stop"


def test_missing_or_incomplete_model_dirs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        build_engine("local", model=str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="never from a hub"):
        build_engine("local", model="Qwen/Qwen2.5-0.5B-Instruct")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"incomplete: missing weights .*, a tokenizer"):
        build_engine("local", model=str(partial))
    with pytest.raises(ValueError, match=r"needs a model: --model DIR or --model FILE\.gguf"):
        build_engine("local")
    with pytest.raises(ValueError, match=r"GGUF file .* does not exist"):
        build_engine("local", model=str(tmp_path / "absent.gguf"))
    (tmp_path / "fake.gguf").write_bytes(b"not a gguf")
    with pytest.raises(ValueError, match="is not a GGUF file"):
        build_engine("local", model=str(tmp_path / "fake.gguf"))
    with pytest.raises(ValueError, match="unknown local option"):
        build_engine("local", model=str(partial), api_key="x")
    with pytest.raises(ValueError, match="device and dtype do not apply with upstream"):
        build_engine("local", model=str(partial), upstream="http://127.0.0.1:1", device="cuda")
    with pytest.raises(ValueError, match="must be an http:// or https:// URL"):
        build_engine("local", model=str(partial), upstream="ftp://127.0.0.1:1")
    done = subprocess.run(
        [sys.executable, "-m", "loopwire", "serve", "--engine", "local", "--model", str(tmp_path / "absent")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "does not exist" in done.stderr


def _cuda_present() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.skipif(_cuda_present(), reason="this machine has a GPU: --device cuda would start")
def test_device_cuda_without_cuda_is_a_clear_error_before_the_server_starts(local_model_dir: Path) -> None:
    """`loopwire serve --engine local --device cuda` on a machine without CUDA: one line naming the cause
    and the fix, exit status 2, no traceback, nothing served (the check runs before the model loads)."""
    for device in ("cuda", "cuda:1", "cuda:x"):
        command = ["serve", "--engine", "local", "--model", str(local_model_dir), "--device", device]
        done = subprocess.run(
            [sys.executable, "-m", "loopwire", *command, "--dtype", "bfloat16", "--port", "9"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and "serving http" not in done.stderr, done.stderr
        if device == "cuda:x":
            assert "cuda or cuda:N with N a number" in done.stderr
            continue
        assert f"--device {device} was asked for, but" in done.stderr
        assert "install a CUDA build of torch" in done.stderr or "sees no GPU" in done.stderr
        assert done.stderr.rstrip().endswith("or use --device cpu"), done.stderr


def test_dtype_auto_is_float32_on_cpu_and_half_on_a_gpu() -> None:
    from loopwire.engines.local.device import auto_dtype

    assert auto_dtype("cpu", "bfloat16", True) == "float32"
    assert auto_dtype("cuda", "bfloat16", True) == "bfloat16"
    assert auto_dtype("cuda", "bfloat16", False) == "float16"  # e.g. a V100: no bfloat16
    assert auto_dtype("cuda", "float16", True) == "float16"
    assert auto_dtype("cuda", "float32", True) == "bfloat16"  # a float32 checkpoint or a dequantized GGUF
    assert auto_dtype("cuda", None, False) == "float16"
    assert auto_dtype("mps", "float32", False) == "float16"


async def test_dtype_option_loads_the_weights_in_it(local_model_dir: Path) -> None:
    import torch

    engine = LocalEngine(LocalSettings(model=str(local_model_dir), dtype="bfloat16"))
    assert next(engine.loaded.model.parameters()).dtype == torch.bfloat16
    hello = EMPTY_CONTEXT.extend([Message(role="user", content="hello")])
    result = await run(engine, hello, max_output_tokens=4)
    assert result.finished.usage.output_tokens >= 1


def test_the_base_install_does_not_import_torch() -> None:
    code = (
        "import sys, loopwire, loopwire.cli, loopwire.config, loopwire.engines.factory, loopwire.server.app\n"
        "from loopwire.engines.factory import check_options\n"
        "try:\n    check_options('local', {'model': '/absent'})\nexcept ValueError:\n    pass\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


FORECAST = ToolSpec(
    "forecast",
    "The forecast for a city.",
    {
        "type": "object",
        "properties": {"city": {"enum": ["Paris", "London"]}, "metric": {"type": "boolean"}},
        "required": ["city", "metric"],
        "additionalProperties": False,
    },
)
ALERTS = ToolSpec(
    "alerts",
    "Weather alerts.",
    {"type": "object", "properties": {"severe": {"type": "boolean"}}, "required": ["severe"]},
)


async def test_a_forced_tool_choice_makes_even_random_weights_call_that_tool(engine: LocalEngine) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("xgrammar")
    history = EMPTY_CONTEXT.extend([user("Forecast for Paris?")])
    tools = (FORECAST, ALERTS)
    choices: list[tuple[ToolChoice, set[str]]] = [
        (NamedToolChoice("forecast"), {"forecast"}),
        ("required", {"forecast", "alerts"}),
    ]
    for choice, allowed in choices:
        result = await run(engine, history, tools=tools, tool_choice=choice, max_output_tokens=200)
        calls = [item for item in result.output if isinstance(item, FunctionCall)]
        assert len(calls) == 1 and calls[0].name in allowed, result.output
        assert result.finished.stop_reason == "tool_calls" and not result.text
        tool = next(tool for tool in tools if tool.name == calls[0].name)
        jsonschema.validate(json.loads(calls[0].arguments), tool.parameters)


async def test_a_forced_call_is_written_as_the_template_writes_it(engine: LocalEngine) -> None:
    """The grammar opens the call as the template does (call_opening), so the text the lane's KV holds
    after a forced call is the start of the next turn's render. (Random weights may spell it in other
    tokens than the tokenizer would; the real model's ids are checked in tests/real/test_local_gguf.py.)"""
    pytest.importorskip("xgrammar")
    history = EMPTY_CONTEXT.extend([user("Any severe alerts?")])
    forced = await run(
        engine, history, tools=(ALERTS,), tool_choice=NamedToolChoice("alerts"), max_output_tokens=200
    )
    calls = [item for item in forced.output if isinstance(item, FunctionCall)]
    assert len(calls) == 1 and json.loads(calls[0].arguments) in ({"severe": True}, {"severe": False})
    state = forced.finished.render
    assert isinstance(state, LocalRenderState)
    answered = history.extend(forced.output).extend(
        [FunctionCallOutput(call_id=calls[0].call_id, output="no")]
    )
    prompt = engine.render(EngineRequest(model="tiny", history=answered, tools=(ALERTS,), tool_choice="none"))
    decode = engine.loaded.tokenizer.decode
    assert decode(prompt).startswith(decode(list(state.ids)))


async def test_a_json_schema_text_format_constrains_the_text(engine: LocalEngine) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("xgrammar")
    schema = FORECAST.parameters
    assert schema is not None
    history = EMPTY_CONTEXT.extend([user("Answer in JSON.")])
    result = await run(
        engine,
        history,
        text_format={"type": "json_schema", "name": "f", "schema": schema},
        max_output_tokens=200,
    )
    assert result.finished.stop_reason == "stop"
    jsonschema.validate(json.loads(result.text), schema)
