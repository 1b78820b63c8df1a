"""The real-model agent benchmark's machinery without a model: the policy forcing each call through
tool_choice against a real `loopwire serve` on the sim engine (which honours tool_choice and makes up the
arguments, as a model that cannot choose would), the policy's arguments run under the model's call ids,
the chain kept over WebSocket mode although tool_choice changes every turn, and `bench agent --real`'s
records, report and plots. The run on the real model is tests/real/test_bench_agent_real.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import ServerProcess

from loopwire.agent.fixture import write_fixture
from loopwire.agent.forced import CALLS_LABEL, CHARS_PER_TOKEN
from loopwire.agent.loop import AgentConfig, run_agent
from loopwire.agent.tools import repo_digest
from loopwire.bench.agent_cli import main
from loopwire.bench.report_real import divergences
from loopwire.bench.samples import RolloutSample, TurnSample, read_jsonl
from loopwire.client import TransportName

POLICY_CALLS = ["list_files", "run_tests", "read_file", "edit_file", "run_tests"]


@pytest.mark.parametrize("transport", ["ws", "http-full"])
async def test_forced_calls_run_the_policys_arguments_under_the_models_call_ids(
    server: ServerProcess, tmp_path: Path, transport: TransportName
) -> None:
    repo = tmp_path / "repo"
    fixture = write_fixture(repo, seed=3)
    repaired = tmp_path / "repaired"
    write_fixture(repaired, seed=3)
    target = repaired / fixture.fix.path
    target.write_text(target.read_text().replace(fixture.fix.old, fixture.fix.new))

    config = AgentConfig(server.base_url, transport, explore=0, seed=3, forced_calls=True, call_tokens=40)
    run = await run_agent(repo, fixture.fix, config)

    assert run.finished and run.tool_calls == 5 and run.turn_count == 6
    assert run.repo_hash == repo_digest(repaired)[0]  # the policy's edit was applied
    calls = [item for item in run.conversation if item["type"] == "function_call"]
    outputs = [item for item in run.conversation if item["type"] == "function_call_output"]
    assert [call["name"] for call in calls] == POLICY_CALLS  # forced: the policy's function every turn
    assert [output["call_id"] for output in outputs] == [call["call_id"] for call in calls]
    edit = json.loads(calls[3]["arguments"])
    assert set(edit) == {"path", "old", "new"}  # the model's own arguments, kept in the history ...
    assert edit["new"] != fixture.fix.new  # ... are not what ran
    assert outputs[-1]["output"].startswith("tests passed")
    answer = run.turns[-1]
    assert run.conversation[-1]["type"] == "message"  # the last turn: tool_choice none, text
    assert 0 < int(answer.usage["output_tokens"]) <= math.ceil(200 / CHARS_PER_TOKEN)  # the policy's length
    sent = [turn.metrics.sent_delta for turn in run.turns]
    if transport == "ws":  # tool_choice and max_output_tokens change every turn, the chain holds
        assert sent == [False] + [True] * 5
    else:
        assert not any(sent)


def test_bench_agent_real_on_the_sim_engine_writes_labelled_records_report_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "real"
    code = main(
        ["--real", "--engine", "sim", "--profiles", "loopback,wan", "--repeats", "2", "--out", str(out)]
    )
    assert code == 0
    rollouts = list(read_jsonl(out / "bench.jsonl", RolloutSample))
    turns = list(read_jsonl(out / "bench.jsonl", TurnSample))
    assert len(rollouts) == 2 * 2 * 2
    assert all(r.finished and r.tool_calls == 5 and r.calls_label == CALLS_LABEL for r in rollouts)
    assert len({r.repo_hash for r in rollouts if r.repeat == 0}) == 1
    for profile in ("loopback", "wan"):  # the transport order alternates between repeats
        firsts = {r.variant for r in rollouts if r.profile == profile and r.order == 0}
        assert firsts == {"http-full", "ws"}
    ws = [t for t in turns if t.variant == "ws"]
    assert all(t.sent_delta == (t.turn > 1) for t in ws)
    assert all(t.output_digest and t.input_tokens > 0 for t in turns)
    report = (out / "report.md").read_text()
    assert f"calls: {CALLS_LABEL}" in report and "http-full / ws end to end (medians): loopback " in report
    for plot in ("turn_latency.png", "ttft.png", "prefilled_tokens.png", "e2e_by_profile.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = tmp_path / "again"
    assert main(["--real", "--report", str(out / "bench.jsonl"), "--out", str(again), "--no-plots"]) == 0
    assert (again / "report.md").read_text() == report


def _turn(rollout: str, turn: int, tokens: int, digest: str) -> TurnSample:
    return TurnSample(
        rollout, rollout, "wan", "sim", 5, 0, turn, 1.0, 1.0, 1, 1, False, tokens, 0, None, None, None,
        None, None, 0.0, output_digest=digest,
    )  # fmt: skip


def _rollout(name: str) -> RolloutSample:
    fields = dict.fromkeys(("bytes_up", "bytes_down", "reconnects", "interrupted", "tool_calls"), 0)
    return RolloutSample(
        rollout=name, variant=name, transport=name, profile="wan", speed="sim", calls=5, repeat=0, order=0,
        turns=2, finished=True, repo_hash="", e2e_s=1.0, floor_s=1.0, model_s=0.0, tool_s=0.0, rtt_s=0.0,
        wire_up=None, wire_down=None, rendered_tokens=None, reused_tokens=None, server_cpu_s=None, **fields,
    )  # fmt: skip


def test_divergences_name_the_turn_where_transports_differ() -> None:
    rollouts = [_rollout("http-full"), _rollout("ws")]
    same = [_turn("http-full", 1, 700, "a"), _turn("ws", 1, 700, "a")]
    assert divergences(rollouts, same) == []
    split = [*same, _turn("http-full", 2, 800, "b"), _turn("ws", 2, 801, "b")]
    assert divergences(rollouts, split) == [
        "repeat 0, turn 2: 800 prompt tokens, output b: http-full; 801 prompt tokens, output b: ws"
    ]
