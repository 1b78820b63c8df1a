"""The coding agent over WebSocket mode through the link emulator, with the link cut mid-stream on some
turns (before any output, and after output had arrived): the rollout still finishes in the same repository
state as an uncut one, every tool call runs once, and no item of the conversation is doubled."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ServerProcess

from loopwire.agent.fixture import read_fix, write_fixture
from loopwire.agent.loop import AgentConfig, AgentRun, TurnRecord, run_agent
from loopwire.client import SessionOptions
from loopwire.netem import LinkEmulator

EXPLORE = 10
SEED = 3
CUT_BEFORE_OUTPUT = 200
"""Bytes down into a turn: inside its first event (response.created carries the tools), so no output."""
CUT_AFTER_OUTPUT = 7_200
"""Bytes down into a turn: past response.created and in_progress (~3 KB each, with the tools), into the
streamed call."""


@pytest.fixture(scope="module")
def paced_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Streams token by token (2,000 tok/s), so a cut can land in the middle of a turn."""
    directory = tmp_path_factory.mktemp("paced-agent-server")
    proc = ServerProcess(
        f"sqlite:{directory / 'db'}", directory / "server.log", ("--sim-decode-tps", "2000")
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


class CutSomeTurns:
    """At the start of chosen turns, arms a cut of the open connection after N more bytes down."""

    def __init__(self, link: LinkEmulator, plan: dict[int, int]) -> None:
        self.link = link
        self.plan = plan
        self.armed: list[int] = []

    def turn_started(self, number: int) -> None:
        after = self.plan.get(number)
        if after is None:
            return
        for connection_id in self.link.open_connections():
            self.link.cut_after(connection_id, after, "down")
            self.armed.append(number)

    def turn_finished(self, record: TurnRecord) -> None:
        pass


async def _rollout(
    server: ServerProcess,
    repo: Path,
    store: bool,
    link: LinkEmulator | None = None,
    observer: CutSomeTurns | None = None,
) -> AgentRun:
    write_fixture(repo, SEED)
    ws_url = None if link is None else f"ws://127.0.0.1:{link.port}/v1/responses"
    config = AgentConfig(
        base_url=server.base_url,
        transport="ws",
        store=store,
        explore=EXPLORE,
        seed=SEED,
        ws_url=ws_url,
        session=SessionOptions(max_socket_failures=10),
    )
    return await run_agent(repo, read_fix(repo), config, observer)


def _call_ids(run: AgentRun) -> list[str]:
    return [str(item["call_id"]) for item in run.conversation if item.get("type") == "function_call"]


@pytest.mark.parametrize("store", [True, False], ids=["store", "no-store"])
async def test_cuts_mid_stream_lose_nothing_and_double_nothing(
    paced_server: ServerProcess, tmp_path: Path, store: bool
) -> None:
    reference = await _rollout(paced_server, tmp_path / "uncut", store)
    async with LinkEmulator(paced_server.port, "loopback") as link:
        plan = {3: CUT_BEFORE_OUTPUT, 6: CUT_AFTER_OUTPUT, 9: CUT_BEFORE_OUTPUT, 12: CUT_AFTER_OUTPUT}
        cutter = CutSomeTurns(link, plan)
        run = await _rollout(paced_server, tmp_path / "cut", store, link, cutter)
        accepted = link.totals().connections_accepted

    assert cutter.armed == sorted(plan)
    assert run.finished and reference.finished
    assert run.repo_hash == reference.repo_hash
    assert run.tool_calls == reference.tool_calls == EXPLORE + 5
    assert run.turn_count == reference.turn_count
    ids = _call_ids(run)
    assert len(ids) == len(set(ids)) == EXPLORE + 5  # each call once, each answered once
    outputs = [item["call_id"] for item in run.conversation if item.get("type") == "function_call_output"]
    assert sorted(outputs) == sorted(ids)
    by_number = {turn.number: turn for turn in run.turns}
    for number in (3, 9):  # cut before output: the client resent the request on a new socket
        assert by_number[number].metrics.resends == 1 and by_number[number].interrupted == 0
    for number in (6, 12):  # cut after output: the client refused to resend; the agent asked again
        assert by_number[number].interrupted == 1
    assert accepted == 1 + len(plan)
    # after each reconnect the chain continues by id when the parent was stored, else in full
    for number in (4, 7, 10, 13):
        assert by_number[number].metrics.sent_delta
