"""`loopwire bench`: the agent-loop benchmark's grid, its arithmetic on known samples and a small real run
(servers, a link emulator, the agent over each variant) with every output it writes; then a small real
run of every other command (turns, stages, gateway, soak, store) and the command dispatch itself."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from loopwire.bench import stages
from loopwire.bench.cli import COMMANDS, main
from loopwire.bench.grid import Cell, Plan, full_plan, quick_plan
from loopwire.bench.report import aggregate, summary_table
from loopwire.bench.samples import RolloutSample, TurnSample, read_jsonl


def test_plan_rotates_variants_and_adds_extras_only_in_their_cell() -> None:
    plan = Plan(
        profiles=("loopback", "wan"),
        speeds=("1000",),
        calls=(5,),
        variants=("http-full", "http-chained", "ws"),
        repeats=3,
        extras=("ws-deflate",),
        extras_cell=Cell("wan", "1000", 5),
    )
    runs = plan.runs()
    loopback = [names for cell, _, names in runs if cell.profile == "loopback"]
    assert loopback == [
        ("http-full", "http-chained", "ws"),
        ("http-chained", "ws", "http-full"),
        ("ws", "http-full", "http-chained"),
    ]
    wan = [names for cell, _, names in runs if cell.profile == "wan"]
    assert all(len(names) == 4 and "ws-deflate" in names for names in wan)
    assert [names[0] for names in wan] == ["http-full", "http-chained", "ws"]
    assert plan.rollouts == 3 * 3 + 3 * 4


@pytest.mark.parametrize(
    "changes",
    [
        {"profiles": ("moon",)},
        {"speeds": ("9",)},
        {"variants": ("carrier-pigeon",)},
        {"calls": (4,)},
        {"repeats": 0},
        {"extras": ("ws-deflate",), "extras_cell": None},
    ],
)
def test_plan_refuses_what_it_cannot_run(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        replace(quick_plan(), **changes)  # type: ignore[arg-type]


def test_full_plan_is_the_issue_grid() -> None:
    plan = full_plan()
    assert set(plan.profiles) == {"loopback", "lan", "wan", "mobile"}
    assert set(plan.speeds) == {"65", "1000", "4000"} and plan.calls == (5, 20, 50)
    assert len(plan.cells()) == 36


def _rollout(variant: str, repeat: int, e2e: float, floor: float, up: int) -> RolloutSample:
    return RolloutSample(
        rollout=f"r/{variant}/{repeat}", variant=variant, transport=variant, profile="wan", speed="1000",
        calls=5, repeat=repeat, order=0, turns=2, tool_calls=5, finished=True, repo_hash="h", e2e_s=e2e,
        floor_s=floor, model_s=floor, tool_s=0.0, rtt_s=0.04, bytes_up=up, bytes_down=0, wire_up=None,
        wire_down=None, rendered_tokens=10, reused_tokens=0, server_cpu_s=0.0, reconnects=0, interrupted=0,
    )  # fmt: skip


def _turn(variant: str, repeat: int, turn: int, latency: float) -> TurnSample:
    return TurnSample(
        rollout=f"r/{variant}/{repeat}", variant=variant, profile="wan", speed="1000", calls=5,
        repeat=repeat, turn=turn, ttft_ms=latency / 2, latency_ms=latency, bytes_up=0, bytes_down=0,
        sent_delta=turn > 1, input_tokens=100, cached_tokens=50, rendered_tokens=5, reused_tokens=0,
        model_ms=1.0, server_ms=1.0, server_cpu_ms=0.5, tool_ms=0.0,
    )  # fmt: skip


def test_aggregate_takes_medians_over_repeats_and_ratios_against_ws() -> None:
    rollouts = [
        _rollout("ws", 0, 1.0, 0.9, 100),
        _rollout("ws", 1, 3.0, 0.9, 100),
        _rollout("ws", 2, 2.0, 0.9, 100),
        _rollout("http-full", 0, 3.0, 1.0, 900),
        _rollout("http-full", 1, 5.0, 1.0, 1100),
    ]
    turns = [_turn(r.variant, r.repeat, n, 10.0 * n) for r in rollouts for n in (1, 2)]
    rows = {row.variant: row for row in aggregate(rollouts, turns)}
    assert rows["ws"].e2e_s == 2.0 and rows["ws"].rollouts == 3
    assert rows["http-full"].e2e_s == 4.0 and rows["http-full"].bytes_up == 1000
    assert rows["ws"].overhead_s == pytest.approx(1.1)
    assert rows["ws"].latency_ms == 15.0 and rows["ws"].ttft_ms == 7.5
    table = summary_table(list(rows.values()))
    assert "| 2.00x |" in table  # http-full / ws = 4.0 / 2.0
    assert "+1.100 s (2.22x)" in table  # ws over its floor


def test_a_small_real_run_writes_the_table_records_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    code = main(
        [
            "--profiles", "loopback,lan", "--speeds", "instant", "--calls", "5",
            "--variants", "http-full,http-chained,ws",
            "--extras", "ws-deflate", "--extras-cell", "lan,instant,5", "--file-kb", "1", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    report = (out / "report.md").read_text()
    assert "loopback / instant tok/s / 5 calls" in report and "ws-deflate" in report
    for plot in ("turn_latency.png", "bytes_up_per_turn.png", "e2e_by_profile.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rollouts = list(read_jsonl(out / "bench.jsonl", RolloutSample))
    turns = list(read_jsonl(out / "bench.jsonl", TurnSample))
    assert len(rollouts) == 2 * 3 + 1
    assert all(r.finished and r.tool_calls == 5 and r.file_kb == 1 for r in rollouts)
    assert all(r.history_bytes > 5_000 for r in rollouts)  # the task, five calls and their outputs
    assert len({r.repo_hash for r in rollouts}) == 1  # the same fix over every transport
    by = {(r.profile, r.variant): r for r in rollouts}
    for profile in ("loopback", "lan"):
        ws, full = by[(profile, "ws")], by[(profile, "http-full")]
        assert ws.bytes_up < full.bytes_up
        assert ws.reused_tokens and ws.reused_tokens > 0 and full.reused_tokens == 0
        assert ws.rendered_tokens is not None and full.rendered_tokens is not None
        assert ws.rendered_tokens < full.rendered_tokens
        assert ws.floor_s <= ws.e2e_s and ws.server_cpu_s is not None
    assert by[("loopback", "ws")].wire_up is None  # no emulator on loopback
    lan_ws, lan_deflate = by[("lan", "ws")], by[("lan", "ws-deflate")]
    assert lan_ws.wire_up is not None and lan_ws.wire_up >= lan_ws.bytes_up
    assert lan_deflate.wire_down is not None and lan_ws.wire_down is not None
    assert lan_deflate.wire_down < lan_ws.wire_down
    ws_turns = [t for t in turns if t.rollout == lan_ws.rollout]
    assert [t.sent_delta for t in ws_turns] == [False] + [True] * (len(ws_turns) - 1)
    assert all(t.model_ms is not None and t.server_ms is not None for t in ws_turns)
    rows = [json.loads(line) for line in (out / "bench.jsonl").read_text().splitlines()]
    assert {row["kind"] for row in rows} == {"RolloutSample", "TurnSample"}
    assert main(["--report", str(out / "bench.jsonl"), "--out", str(tmp_path / "again"), "--no-plots"]) == 0
    assert (tmp_path / "again" / "report.md").read_text() == report


def _summary(path: Path) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = json.loads(path.read_text())["summary"]
    return summary


def test_commands_dispatch_and_refuse_what_they_do_not_know(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name} " in listed for name in COMMANDS)
    assert main(["carrier-pigeon"]) == 2
    assert "unknown command 'carrier-pigeon'" in capsys.readouterr().err


def test_turns_measures_every_transport_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "turns.json"
    args = ["--turns", "4", "--conversations", "1", "--warmup", "0", "--output-bytes", "3000"]
    assert main(["turns", *args, "--json", str(out)]) == 0
    summary = _summary(out)
    assert set(summary) == {"ws", "ws-stored", "http-full", "http-chained", "echo"}
    assert all(row["late_ms"] > 0 and row["cpu_late_ms"] > 0 for row in summary.values())
    # the stateless client resends the history; the chained ones send the delta
    assert summary["http-full"]["bytes_up_last"] > summary["ws"]["bytes_up_last"] + 2 * 3000  # outputs 1-2
    assert summary["http-chained"]["bytes_up_last"] < summary["ws"]["bytes_up_last"] + 1000


async def test_stages_come_from_the_real_run_turn(tmp_path: Path) -> None:
    args = stages.build_parser().parse_args(
        ["--turns", "3", "--conversations", "2", "--output-bytes", "2000"]
    )
    times = await stages.run(args)
    assert {turn for turn in times["total"]} == {1, 2, 3}
    for turn in (1, 2, 3):
        assert len(times["total"][turn]) == 2  # the warm-up conversation is not recorded
        parts = sum(times[stage][turn][0] for stage in stages.STAGES if stage != "total")
        assert parts == pytest.approx(times["total"][turn][0])
        assert all(times[stage][turn][0] >= 0 for stage in stages.STAGES)
        assert times["engine"][turn][0] > 0


@pytest.mark.parametrize(
    ("engine", "transports"),
    [("openai-chat", {"direct", "ws", "http-full"}), ("responses", {"direct", "ws", "ws-http"})],
)
def test_gateway_runs_loopwire_in_front_of_each_upstream(
    tmp_path: Path, engine: str, transports: set[str]
) -> None:
    out = tmp_path / "gateway.json"
    args = ["--turns", "3", "--conversations", "1", "--warmup", "0", "--output-bytes", "2000"]
    assert main(["gateway", "--engine", engine, *args, "--json", str(out)]) == 0
    summary = _summary(out)
    assert transports <= set(summary)
    assert all(summary[name]["late_ms"] > 0 for name in transports)
    assert summary["ws"]["cpu_late_ms"] > 0  # loopwire's own CPU, read from /proc


def test_gateway_refuses_a_transport_its_engine_has_not(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["gateway", "--engine", "responses", "--transports", "http-full"])
    assert "has no transport http-full" in capsys.readouterr().err


def test_soak_loses_nothing_under_a_short_load(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["soak", "--sessions", "6", "--http-clients", "1", "--seconds", "3", "--verify", "10"]) == 0
    out = capsys.readouterr().out
    assert "errors 0, lost 0, duplicated ids 0" in out and "0 missing" in out


def test_store_times_every_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "--n", "20", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("MemoryStore", "SqliteStore (write-through)", "WriteBehindStore(SqliteStore)"):
        assert out.count(name) == 2, out  # back to back, and with a gap


def test_local_measures_ttft_with_and_without_the_lanes_kv_cache(tmp_path: Path) -> None:
    out = tmp_path / "local.json"
    model = ["--hidden", "128", "--layers", "1", "--intermediate", "256", "--tool-tokens", "60"]
    assert main(["local", "--turns", "1,3", "--conversations", "1", *model, "--json", str(out)]) == 0
    turns = json.loads(out.read_text())["turns"]
    assert turns["1"]["cached"] == 0  # nothing to reuse on the first turn
    assert 0 < turns["3"]["cached"] < turns["3"]["input_tokens"]  # the lane's cache, then the new tokens
    assert all(row["on_ms"] > 0 and row["off_ms"] > 0 for row in turns.values())
