"""The local engine's own KV cache and jump-forward decoding on a tiny randomly initialised model: the
growing cache gives the logits of transformers' DynamicCache through extend, crop and extend, writing in
place (a buffer is reallocated only when full, by doubling); feeding a grammar's forced tokens ahead of
picking them gives the same output as one token per forward pass, in fewer passes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_local_engine import ALERTS, FORECAST, run, user  # noqa: E402

from loopwire.engines.base import NamedToolChoice, ToolChoice  # noqa: E402
from loopwire.engines.local import LocalEngine, LocalSettings  # noqa: E402
from loopwire.engines.local.kv_cache import GrowingLayer, growing_cache  # noqa: E402
from loopwire.engines.local.loader import LoadedModel, load  # noqa: E402
from loopwire.protocol.context import EMPTY_CONTEXT  # noqa: E402
from loopwire.protocol.items import FunctionCall  # noqa: E402


@pytest.fixture(scope="module")
def loaded(local_model_dir: Path) -> LoadedModel:
    return load(LocalSettings(model=str(local_model_dir)))


def forward(loaded: LoadedModel, ids: list[int], cache: Any) -> Any:
    tensor = torch.tensor([ids], dtype=torch.long)
    with torch.inference_mode():
        return loaded.model(input_ids=tensor, **{loaded.cache_kwarg: cache}, use_cache=True).logits[0]


def test_the_growing_cache_gives_dynamic_cache_logits_through_extend_crop_extend(loaded: LoadedModel) -> None:
    from transformers import DynamicCache

    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 200, (700,), generator=generator).tolist()
    steps = [ids[:300], *([token] for token in ids[300:310]), ids[310:500]]
    ours, theirs = growing_cache(loaded.config, loaded.max_positions), DynamicCache(config=loaded.config)
    for piece in steps:
        assert torch.equal(forward(loaded, piece, ours), forward(loaded, piece, theirs))
    assert ours.get_seq_length() == theirs.get_seq_length() == 500
    ours.crop(-120)
    theirs.crop(-120)
    assert ours.get_seq_length() == 380
    for piece in (ids[380:600], [ids[600]]):
        assert torch.equal(forward(loaded, piece, ours), forward(loaded, piece, theirs))
    layer = ours.layers[0]
    assert isinstance(layer, GrowingLayer) and ours.is_croppable
    assert torch.equal(layer.keys, theirs.layers[0].keys)


def test_the_growing_cache_writes_in_place_and_doubles_when_full(loaded: LoadedModel) -> None:
    cache = growing_cache(loaded.config, 4096)
    forward(loaded, list(range(10, 300)), cache)
    layer = cache.layers[0]
    assert isinstance(layer, GrowingLayer)
    buffers: set[int] = set()
    capacities: list[int] = []
    for token in range(40, 340):
        forward(loaded, [token], cache)
        buffers.add(layer.keys.untyped_storage().data_ptr())
        capacities.append(layer.capacity)
    assert cache.get_seq_length() == 590
    assert sorted(set(capacities)) == [580, 1160], "the 290-token prefill's room, doubled when full, twice"
    assert len(buffers) == 2, "one buffer per capacity: every other step wrote in place"


@pytest.fixture(scope="module")
def engine_pair(local_model_dir: Path) -> tuple[LocalEngine, LocalEngine]:
    pytest.importorskip("xgrammar")
    drafting = LocalEngine(LocalSettings(model=str(local_model_dir)))
    stepping = LocalEngine(replace(drafting.settings, jump_forward=False), loaded=drafting.loaded)
    return drafting, stepping


@pytest.mark.parametrize("temperature", [0.0, 0.9])
async def test_jump_forward_gives_the_same_output_in_fewer_forward_passes(
    engine_pair: tuple[LocalEngine, LocalEngine], temperature: float
) -> None:
    drafting, stepping = engine_pair
    history = EMPTY_CONTEXT.extend([user("Forecast for Paris?")])
    schema = FORECAST.parameters
    cases: list[dict[str, Any]] = [
        {"tools": (FORECAST, ALERTS), "tool_choice": NamedToolChoice("forecast")},
        {"tools": (FORECAST, ALERTS), "tool_choice": "required"},
        {"text_format": {"type": "json_schema", "name": "f", "schema": schema}},
    ]
    for fields in cases:
        choice: ToolChoice = fields.get("tool_choice", "auto")
        passes = []
        outputs = []
        for engine in (drafting, stepping):
            engine.generator.sampler.generator.manual_seed(7)  # the same draws on both
            before = engine.stats.forward_passes
            result = await run(engine, history, temperature=temperature, max_output_tokens=200, **fields)
            passes.append(engine.stats.forward_passes - before)
            calls = [(item.name, item.arguments) for item in result.output if isinstance(item, FunctionCall)]
            outputs.append((result.text, calls))
            assert result.finished.usage.output_tokens > 0
        assert outputs[0] == outputs[1], (choice, outputs)
        assert passes[0] < passes[1], (choice, passes)
        if "text_format" in fields:
            json.loads(outputs[0][0])
    assert drafting.stats.drafted >= drafting.stats.draft_kept > 0
    assert stepping.stats.drafted == drafting.stats.drafted  # the same forced tokens, fed one per pass
