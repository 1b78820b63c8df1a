"""Reconnect grace (`--resume-grace-s`) against a real server over raw WebSockets: a socket that asked for a
resume token and dropped uncleanly has its store=false lanes parked; a new socket presenting the token gets
them back and continues by id. Used, clean-closed, expired and other keys' tokens behave like unknown ones;
with grace off nothing changes on the wire. Parked lanes count in the cache budget (/metrics)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from conftest import API_KEY, ServerProcess
from link_cutter import LinkCutter

from loopwire.client import Session, SessionOptions, TurnMetrics
from loopwire.client.backoff import Backoff

GRACE_S = 30.0


@pytest.fixture(scope="module")
def grace_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("grace")
    args = ("--resume-grace-s", str(GRACE_S), "--node-id", "n7")
    proc = ServerProcess("memory", directory / "server.log", args).start()
    try:
        yield proc
    finally:
        proc.stop()


def ws_url(node: ServerProcess) -> str:
    return node.base_url.replace("http://", "ws://") + "/responses"


async def connect(node: ServerProcess, resume: str | None, key: str = API_KEY) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    if resume is not None:
        headers["x-loopwire-resume"] = resume
    return await websockets.connect(ws_url(node), additional_headers=headers)


async def resume_event(socket: Any) -> dict[str, Any]:
    event = json.loads(await asyncio.wait_for(socket.recv(), 10))
    assert event["type"] == "loopwire.resume_token", event
    return event


async def turn(socket: Any, text: str, previous: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "response.create", "model": "sim", "input": text, "store": False}
    if previous is not None:
        body["previous_response_id"] = previous
    await socket.send(json.dumps(body))
    while True:
        event = json.loads(await asyncio.wait_for(socket.recv(), 10))
        if event["type"] in ("response.completed", "response.failed", "error"):
            return event


def drop(socket: Any) -> None:
    """Cut the TCP connection without a close frame (the server sees 1006)."""
    socket.transport.abort()


def metric(node: ServerProcess, name: str) -> float:
    with urllib.request.urlopen(f"{node.origin}/metrics", timeout=10) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def wait_metric(node: ServerProcess, name: str, value: float) -> None:
    async with asyncio.timeout(10):
        while metric(node, name) != value:  # noqa: ASYNC110 -- the server exposes a count, not an event
            await asyncio.sleep(0.02)  # polling the server's own count, bounded


async def parked_conversation(
    node: ServerProcess, key: str = API_KEY, grace_s: float = GRACE_S
) -> tuple[str, str]:
    """Two store=false turns on a socket that asked for a token, then an unclean drop once it is parked:
    (token, last response id)."""
    parked_before = metric(node, "loopwire_parked_connections")
    socket = await connect(node, "new", key)
    event = await resume_event(socket)
    assert (
        event["resumed"] is False and event["token"].startswith("n7.") and event["resume_grace_s"] == grace_s
    )
    first = await turn(socket, "hello")
    second = await turn(socket, "again", first["response"]["id"])
    assert second["type"] == "response.completed"
    drop(socket)
    await wait_metric(node, "loopwire_parked_connections", parked_before + 1)
    return event["token"], second["response"]["id"]


async def test_a_dropped_sockets_lanes_come_back_once_for_its_token(grace_server: ServerProcess) -> None:
    token, last = await parked_conversation(grace_server)
    assert metric(grace_server, "loopwire_cached_bytes") > 0  # parked lanes count in the budget
    socket = await connect(grace_server, token)
    event = await resume_event(socket)
    assert event["resumed"] is True and event["lanes"] == 1 and event["token"] != token
    follow = await turn(socket, "continued by id, no replay", last)
    assert follow["type"] == "response.completed", follow
    await socket.close()  # a clean close: nothing is parked
    await wait_metric(grace_server, "loopwire_cached_bytes", 0)

    replayed = await connect(grace_server, token)  # single use: the same token again is unknown
    assert (await resume_event(replayed))["resumed"] is False
    missed = await turn(replayed, "again", follow["response"]["id"])
    assert missed["type"] == "error" and missed["error"]["code"] == "previous_response_not_found"
    await replayed.close()


async def test_another_keys_token_is_unknown_and_does_not_spend_it(grace_server: ServerProcess) -> None:
    token, last = await parked_conversation(grace_server)
    thief = await connect(grace_server, token, key="sk-someone-else")
    assert (await resume_event(thief))["resumed"] is False
    stolen = await turn(thief, "let me in", last)
    assert stolen["type"] == "error" and stolen["error"]["code"] == "previous_response_not_found"
    await thief.close()
    owner = await connect(grace_server, token)
    assert (await resume_event(owner))["resumed"] is True
    assert (await turn(owner, "mine", last))["type"] == "response.completed"
    await owner.close()


async def test_a_clean_close_parks_nothing(grace_server: ServerProcess) -> None:
    socket = await connect(grace_server, "new")
    token = (await resume_event(socket))["token"]
    done = await turn(socket, "hello")
    await socket.close()
    again = await connect(grace_server, token)
    assert (await resume_event(again))["resumed"] is False
    missed = await turn(again, "more", done["response"]["id"])
    assert missed["error"]["code"] == "previous_response_not_found"
    await again.close()


async def test_parked_lanes_expire_after_the_grace(tmp_path: Path) -> None:
    node = ServerProcess("memory", tmp_path / "server.log", ("--resume-grace-s", "3", "--node-id", "n7"))
    node.start()
    try:
        token, last = await parked_conversation(node, grace_s=3.0)
        await wait_metric(node, "loopwire_parked_connections", 0)  # let go after 3 s
        assert metric(node, "loopwire_cached_bytes") == 0
        late = await connect(node, token)
        assert (await resume_event(late))["resumed"] is False
        assert (await turn(late, "too late", last))["error"]["code"] == "previous_response_not_found"
        await late.close()
    finally:
        node.stop()


async def test_without_grace_the_header_changes_nothing(base_url: str, server: ServerProcess) -> None:
    socket = await connect(server, "new")
    first = await turn(socket, "hello")  # the first frame is the turn's own: no token event
    assert first["type"] == "response.completed"
    await socket.close()


# -- loopwire.client with `resume=True` ----------------------------------------------------------------------


async def cut_conversation(node: ServerProcess) -> list[TurnMetrics]:
    """A store=false session through a link cutter: 3 turns, a cut between turns, 2 turns, a cut during a
    request (the server never saw it), 2 turns; each turn's metrics."""
    cutter = await LinkCutter(node.port).start()
    options = SessionOptions(resume=True, backoff=Backoff(base_s=0.01, max_s=0.05))
    conversation: list[dict[str, Any]] = []
    metrics: list[TurnMetrics] = []
    try:
        async with Session(
            node.base_url, "ws", api_key=API_KEY, store=False, ws_url=cutter.url, options=options
        ) as session:
            for index in range(7):
                if index == 3:
                    cutter.cut()
                if index == 5:
                    cutter.cut_on_next_request()
                conversation.append({"type": "message", "role": "user", "content": f"turn {index} " * 200})
                result = await session.run_turn(conversation, model="sim")
                assert result.status == "completed"
                conversation += result.output
                metrics.append(result.metrics)
    finally:
        await cutter.close()
    return metrics


async def test_the_client_takes_its_lanes_back_after_a_cut(grace_server: ServerProcess) -> None:
    turns = await cut_conversation(grace_server)
    cut_turns = [turns[3], turns[5]]
    assert all(turn.reconnects == 1 and turn.resumed for turn in cut_turns)
    assert all(turn.sent_delta and not turn.replayed for turn in turns[1:])  # by id, never the history
    one_turn = max(turn.bytes_up for turn in turns[1:3])
    assert all(turn.bytes_up <= turn.attempts * (one_turn + 16) for turn in cut_turns)  # the new turn only


async def test_without_grace_the_client_replays_once_per_cut(server: ServerProcess) -> None:
    turns = await cut_conversation(server)
    for turn in (turns[3], turns[5]):
        assert turn.reconnects == 1 and not turn.resumed and not turn.sent_delta
        assert turn.bytes_up > 3 * turns[2].bytes_up  # the whole history again
