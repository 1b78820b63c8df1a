"""The coding agent: the fixture's bug, the tools' confinement and errors, and whole rollouts against a real
server over every transport (same final repository, green tests), with flaky tools and growing exploration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ServerProcess

from loopwire.agent.cli import main
from loopwire.agent.fixture import BUG_COUNT, SIDECAR, build_fixture, read_fix, write_fixture
from loopwire.agent.loop import AgentConfig, AgentRun, run_agent
from loopwire.agent.tools import TOOL_SCHEMAS, Toolbox, ToolSettings, repo_digest
from loopwire.client import TRANSPORTS, TransportName
from loopwire.engines.sim.coding_policy import (
    ERROR_PREFIX,
    PASSED_LINE,
    Call,
    policy_metadata,
    scripted_policy,
)


def _unittest(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unittest", "discover", "-s", "tests", "-t", "."],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=60,
        check=False,
    )


def _repaired(tmp: Path, seed: int) -> Path:
    """The fixture for `seed` with its fix applied by hand: the state every rollout must end in."""
    fixture = write_fixture(tmp, seed)
    target = tmp / fixture.fix.path
    target.write_text(target.read_text().replace(fixture.fix.old, fixture.fix.new))
    return tmp


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("agent-server")
    proc = ServerProcess("memory", directory / "server.log").start()
    try:
        yield proc
    finally:
        proc.stop()


# -- fixture -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bug", range(BUG_COUNT))
def test_fixture_tests_fail_with_the_bug_and_pass_after_the_fix(tmp_path: Path, bug: int) -> None:
    fixture = write_fixture(tmp_path, seed=11, bug=bug)
    assert 8 <= len(fixture.files) <= 14 and sum(map(len, fixture.files.values())) > 8000
    before = _unittest(tmp_path)
    assert before.returncode != 0 and "FAILED" in before.stderr
    assert fixture.fix.test.rsplit(".", 1)[-1] in before.stderr  # the failing test is in the named module
    target = tmp_path / fixture.fix.path
    assert target.read_text().count(fixture.fix.old) == 1
    target.write_text(target.read_text().replace(fixture.fix.old, fixture.fix.new))
    after = _unittest(tmp_path)
    assert after.returncode == 0, after.stderr


def test_padding_grows_the_package_modules_and_keeps_the_bug_and_its_fix(tmp_path: Path) -> None:
    plain, padded = build_fixture(5), build_fixture(5, padding_bytes=4096)
    assert padded == build_fixture(5, padding_bytes=4096) and padded.fix == plain.fix
    grown = {path for path in plain.files if len(padded.files[path]) > len(plain.files[path])}
    package = f"{plain.package}/"
    assert grown == {p for p in plain.files if p.startswith(package) and not p.endswith("__init__.py")}
    assert all(4096 <= len(padded.files[p]) - len(plain.files[p]) < 4096 + 200 for p in grown)
    write_fixture(tmp_path, 5, padding_bytes=4096)
    assert _unittest(tmp_path).returncode != 0
    target = tmp_path / padded.fix.path
    assert target.read_text().count(padded.fix.old) == 1
    target.write_text(target.read_text().replace(padded.fix.old, padded.fix.new))
    assert _unittest(tmp_path).returncode == 0
    with pytest.raises(ValueError):
        build_fixture(5, padding_bytes=-1)


def test_fixture_is_deterministic_per_seed_and_records_its_fix(tmp_path: Path) -> None:
    assert build_fixture(4) == build_fixture(4)
    assert len({build_fixture(seed).fix for seed in range(12)}) > 1  # seeds pick different bugs
    fixture = write_fixture(tmp_path, 4)
    assert read_fix(tmp_path) == fixture.fix
    assert SIDECAR not in repo_digest(tmp_path)[1]  # the sidecar is not part of the repository's state


# -- tools ---------------------------------------------------------------------------------------------------


def test_tools_confine_paths_with_clear_errors(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    fixture = write_fixture(repo, 1)
    (tmp_path / "secret.txt").write_text("outside")
    (repo / "link").symlink_to(tmp_path)
    tools = Toolbox(repo)
    for name, arguments in (
        ("read_file", {"path": "../secret.txt"}),
        ("read_file", {"path": "/etc/passwd"}),
        ("read_file", {"path": "link/secret.txt"}),
        ("list_files", {"path": "tests/../.."}),
        ("grep", {"pattern": "x", "path": "../"}),
        ("edit_file", {"path": "../secret.txt", "old": "outside", "new": "inside"}),
        ("run_tests", {"selector": "../x.py"}),
    ):
        outcome = tools.call(name, json.dumps(arguments))
        assert not outcome.ok and outcome.output.startswith(ERROR_PREFIX), (name, arguments)
        assert "repository" in outcome.output or "absolute" in outcome.output, outcome.output
    assert (tmp_path / "secret.txt").read_text() == "outside"
    package = fixture.package
    listing = tools.call("list_files", '{"path": "."}')
    assert listing.ok and f"{package}/ranges.py" in listing.output and SIDECAR not in listing.output
    assert tools.call("read_file", json.dumps({"path": f"{package}/stats.py"})).output.startswith('"""')
    grep = tools.call("grep", json.dumps({"pattern": r"def parse_ranges", "path": package}))
    assert grep.ok and f"{package}/ranges.py:" in grep.output
    for name, arguments, message in (
        ("grep", {"pattern": "(", "path": "."}, "invalid regular expression"),
        ("read_file", {"path": "missing.py"}, "no such file"),
        (
            "edit_file",
            {"path": f"{package}/stats.py", "old": "return", "new": "x"},
            "must occur exactly once",
        ),
        ("nope", {}, "unknown tool"),
        ("read_file", {}, "argument 'path' is required"),
    ):
        outcome = tools.call(name, json.dumps(arguments))
        assert not outcome.ok and message in outcome.output, outcome.output
    assert not tools.call("read_file", "{not json").ok


def test_run_tests_reports_the_verdict_and_bounds_output(tmp_path: Path) -> None:
    fixture = write_fixture(tmp_path, 2)
    tools = Toolbox(tmp_path, ToolSettings(max_output=400))
    failing = tools.call("run_tests", '{"selector": ""}')
    assert failing.ok and failing.output.startswith("tests FAILED") and len(failing.output) <= 400
    one = tools.call("run_tests", json.dumps({"selector": "tests/test_config.py"}))
    assert one.output.startswith(PASSED_LINE), one.output
    edit = tools.call(
        "edit_file", json.dumps({"path": fixture.fix.path, "old": fixture.fix.old, "new": fixture.fix.new})
    )
    assert edit.ok
    passed = [tools.call("run_tests", '{"selector": ""}').output for _ in range(2)]
    assert passed[0].startswith(PASSED_LINE) and "\nRan " in passed[0], passed[0]
    assert " tests in " not in passed[0] and passed[0] == passed[1], passed  # no wall-clock time in it
    assert not list(tmp_path.rglob("__pycache__"))  # tests run without writing bytecode
    assert {schema["name"] for schema in TOOL_SCHEMAS} == {
        "list_files",
        "grep",
        "read_file",
        "edit_file",
        "run_tests",
    }


def test_flaky_tools_fail_at_the_rate_and_the_same_way_per_seed(tmp_path: Path) -> None:
    write_fixture(tmp_path, 0)

    def pattern(seed: int) -> list[bool]:
        tools = Toolbox(tmp_path, ToolSettings(flaky=0.3, seed=seed, flaky_delay_s=0.0))
        return [tools.call("list_files", '{"path": "tests"}').ok for _ in range(400)]

    first = pattern(5)
    assert first == pattern(5) and first != pattern(6)
    assert 0.2 < first.count(False) / len(first) < 0.4


# -- policy --------------------------------------------------------------------------------------------------


def test_policy_is_selected_by_metadata_and_starts_by_listing() -> None:
    fix = build_fixture(0).fix
    assert scripted_policy(None) is None and scripted_policy({"loopwire_policy": "other"}) is None
    policy = scripted_policy(policy_metadata(fix, seed=3, explore=7, batch=2))
    assert policy is not None
    assert (policy.fix.path, policy.fix.old, policy.fix.new) == (fix.path, fix.old, fix.new)
    assert (policy.seed, policy.explore, policy.batch) == (3, 7, 2)
    assert policy.decide([]) == [Call.of("list_files", path=".")]


# -- whole rollouts against a server -------------------------------------------------------------------------


async def _rollout(
    server: ServerProcess, repo: Path, transport: TransportName, **options: object
) -> AgentRun:
    seed = int(options.pop("seed", 7))  # type: ignore[call-overload]
    write_fixture(repo, seed)
    config = AgentConfig(base_url=server.base_url, transport=transport, seed=seed, **options)  # type: ignore[arg-type]
    return await run_agent(repo, read_fix(repo), config)


async def test_agent_fixes_the_repo_identically_over_every_transport(
    agent_server: ServerProcess, tmp_path: Path
) -> None:
    expected, _ = repo_digest(_repaired(tmp_path / "by-hand", 7))
    runs = {t: await _rollout(agent_server, tmp_path / t, t, explore=12) for t in TRANSPORTS}
    for transport, run in runs.items():
        assert run.finished and "All tests pass" in run.final_text, (transport, run.final_text)
        assert run.repo_hash == expected, transport
        assert run.tool_calls == 12 + 5 and run.tool_errors == 0
        assert run.turn_count == 18 and all(turn.metrics.transport == transport for turn in run.turns)
        assert _unittest(tmp_path / transport).returncode == 0
    assert len({run.repo_hash for run in runs.values()}) == 1
    # the delta transports send only new items after the first turn; http-full resends everything
    assert all(turn.metrics.sent_delta for turn in runs["ws"].turns[1:])
    assert all(turn.metrics.sent_delta for turn in runs["http-chained"].turns[1:])
    assert not any(turn.metrics.sent_delta for turn in runs["http-full"].turns)
    up = {t: sum(turn.metrics.bytes_up for turn in run.turns) for t, run in runs.items()}
    assert up["ws"] < up["http-full"] and up["http-chained"] < up["http-full"]
    calls = [
        [item.get("name"), item.get("arguments")]
        for item in runs["ws"].conversation
        if item.get("type") == "function_call"
    ]
    calls_full = [
        [item.get("name"), item.get("arguments")]
        for item in runs["http-full"].conversation
        if item.get("type") == "function_call"
    ]
    assert calls == calls_full  # the same rollout, call for call


@pytest.mark.parametrize("transport", ["ws", "http-chained"])
async def test_agent_finishes_with_flaky_tools(
    agent_server: ServerProcess, tmp_path: Path, transport: TransportName
) -> None:
    expected, _ = repo_digest(_repaired(tmp_path / "by-hand", 3))
    run = await _rollout(
        agent_server,
        tmp_path / "repo",
        transport,
        seed=3,
        explore=10,
        tools=ToolSettings(flaky=0.2, seed=3, flaky_delay_s=0.005),
    )
    assert run.finished and run.repo_hash == expected
    assert run.tool_errors > 0 and run.tool_calls == 10 + 5 + run.tool_errors
    assert _unittest(tmp_path / "repo").returncode == 0


async def test_tool_calls_grow_with_exploration(agent_server: ServerProcess, tmp_path: Path) -> None:
    counts = {}
    for explore in (0, 5, 40):
        run = await _rollout(agent_server, tmp_path / f"e{explore}", "ws", explore=explore)
        assert run.finished
        counts[explore] = run.tool_calls
    assert counts == {0: 5, 5: 10, 40: 45}


async def test_batched_exploration_issues_parallel_calls(agent_server: ServerProcess, tmp_path: Path) -> None:
    run = await _rollout(agent_server, tmp_path / "repo", "ws", explore=12, batch=4)
    assert run.finished and run.tool_calls == 17
    assert max(turn.tool_calls for turn in run.turns) == 4 and run.turn_count == 18 - 9


def test_cli_creates_the_fixture_and_runs(
    agent_server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    argv = ["--repo", str(repo), "--create-fixture", "--transport", "ws", "--base-url", agent_server.base_url]
    assert main([*argv, "--explore", "3", "--flaky", "0.2", "--seed", "5", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["finished"] and summary["tool_calls"] >= 8 and summary["repo_hash"] == repo_digest(repo)[0]
    assert main(["--repo", str(tmp_path / "empty"), "--base-url", agent_server.base_url]) == 2


def test_run_tests_times_out_with_a_clear_error(tmp_path: Path) -> None:
    write_fixture(tmp_path, 0)
    (tmp_path / "tests" / "test_slow.py").write_text(
        "import time\nimport unittest\n\n\nclass Slow(unittest.TestCase):\n"
        "    def test_slow(self) -> None:\n        time.sleep(30)\n"
    )
    tools = Toolbox(tmp_path, ToolSettings(test_timeout_s=1.0))
    outcome = tools.call("run_tests", json.dumps({"selector": "tests.test_slow"}))
    assert not outcome.ok and "did not finish within 1s" in outcome.output and outcome.seconds < 10
