"""The real Codex CLI (pinned by the Makefile; `make test-latest` runs the newest) against `loopwire serve`
over WebSocket mode: the task finishes, Codex never falls back to HTTP, and after its first request every
request on a socket is a delta (`previous_response_id` of the response before it, input only the new items).

What passes between them is read by a recording proxy on loopback (tests/wire_recorder.py) and by loopwire's
own /metrics. Codex's tools reach the sim engine with `tool_choice: "auto"`, which it answers with text, so
Codex never runs a generated command (and its sandbox is read-only in an empty temporary directory).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from codex_cli import AppServer, codex_binary, outbound_urls, run_exec
from conftest import ServerProcess, metric
from wire_recorder import SocketRecord, WireRecorder

PROMPT = "Reply with one short sentence: what is loopwire?"


@pytest.fixture
def codex() -> Path:
    return codex_binary()


@pytest.fixture(params=["sim", "responses"])
def loopwire(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """loopwire on the sim engine, or loopwire's responses engine in front of a second loopwire (sim)."""
    upstream: ServerProcess | None = None
    extra: tuple[str, ...] = ()
    if request.param == "responses":
        upstream = ServerProcess("memory", tmp_path / "upstream.log").start()
        extra = ("--engine", "responses", "--upstream", upstream.base_url)
    server = ServerProcess("memory", tmp_path / "server.log", extra).start()
    try:
        yield server
    finally:
        server.stop()
        if upstream is not None:
            upstream.stop()


@pytest.fixture
def recorder(loopwire: ServerProcess) -> Iterator[WireRecorder]:
    with WireRecorder(loopwire.origin) as proxy:
        yield proxy


def item_key(item: dict[str, Any]) -> str:
    """An item's identity across turns: its JSON without the id a client may or may not send back."""
    return json.dumps({k: v for k, v in item.items() if k != "id"}, sort_keys=True)


def turns_on(socket: SocketRecord) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each response.create on the socket with the terminal event that answered it (one lane: in order)."""
    requests = [frame for frame in socket.client_events() if frame.get("type") == "response.create"]
    terminals = [
        frame
        for frame in socket.server_events()
        if frame.get("type") in ("response.completed", "response.failed", "response.incomplete", "error")
    ]
    assert len(terminals) == len(requests), f"unanswered requests on {socket.path}: {terminals}"
    return list(zip(requests, terminals, strict=True))


def check_deltas_only(socket: SocketRecord) -> int:
    """Every turn completed; every request after the first continues from the response just before it and
    sends only items the server has not seen on this chain. Returns the number of continuations."""
    turns = turns_on(socket)
    seen: set[str] = set()
    previous_id: str | None = None
    continuations = 0
    for number, (request, terminal) in enumerate(turns):
        assert terminal["type"] == "response.completed", f"turn {number} ended with {terminal}"
        keys = [item_key(item) for item in request.get("input", [])]
        if number:
            assert request.get("previous_response_id") == previous_id, (
                f"request {number} did not continue from {previous_id}: "
                f"previous_response_id={request.get('previous_response_id')!r}"
            )
            repeated = [key for key in keys if key in seen]
            assert not repeated, f"request {number} resent {len(repeated)} items: {repeated[:2]}"
            continuations += 1
        response = terminal["response"]
        seen.update(keys)
        seen.update(item_key(item) for item in response["output"])
        previous_id = response["id"]
    return continuations


def final_text(socket: SocketRecord) -> str:
    _, terminal = turns_on(socket)[-1]
    return "".join(
        part["text"]
        for item in terminal["response"]["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


def check_websocket_only(server: ServerProcess, recorder: WireRecorder, requests: int) -> None:
    posts = list(recorder.responses_posts())
    assert not posts, f"Codex fell back to HTTP: {[(p.method, p.path, p.status) for p in posts]}"
    assert metric(server, "loopwire_turns_total", transport="http") == 0
    assert metric(server, "loopwire_turns_total", transport="ws", outcome="completed") == requests


def test_codex_exec_finishes_over_websocket_mode_with_deltas_only(
    codex: Path, loopwire: ServerProcess, recorder: WireRecorder, tmp_path: Path
) -> None:
    run = run_exec(codex, recorder.base_url, tmp_path, PROMPT)
    assert run.returncode == 0, run.describe()
    assert not run.outbound(), f"Codex tried to leave loopback: {run.outbound()}"
    assert [event["type"] for event in run.events if event["type"].startswith("turn.")] == [
        "turn.started",
        "turn.completed",
    ], run.describe()

    assert len(recorder.sockets) == 1, f"Codex opened {len(recorder.sockets)} sockets (a reconnect)"
    socket = recorder.sockets[0]
    assert socket.headers.get("openai-beta", "").startswith("responses_websockets="), socket.headers
    requests = turns_on(socket)
    assert requests[0][0].get("generate") is False, "Codex's first frame is its warm-up"
    assert len(requests) >= 2, "the warm-up and at least one sampled turn"
    continuations = check_deltas_only(socket)
    assert continuations == len(requests) - 1
    assert metric(loopwire, "loopwire_parent_lookups_total", result="cache") == continuations

    check_websocket_only(loopwire, recorder, len(requests))
    answer = final_text(socket)
    assert answer and run.agent_messages()[-1] == answer


def test_codex_thread_second_turn_is_a_delta_on_the_same_socket(
    codex: Path, loopwire: ServerProcess, recorder: WireRecorder, tmp_path: Path
) -> None:
    """Two turns of one thread through `codex app-server` (what IDE clients drive): the second turn's request
    continues from the first turn's response on the same socket and carries only the new user message and
    what Codex adds with it."""
    app = AppServer(codex, recorder.base_url, tmp_path)
    try:
        thread_id = app.start_thread()
        first = app.run_turn(thread_id, PROMPT)
        second = app.run_turn(thread_id, "And in one more sentence: why WebSocket mode?")
    finally:
        app.stop()
    assert not outbound_urls(app.stderr_text()), f"Codex tried to leave loopback: {app.stderr_text()}"
    assert first["status"] == "completed", (first, app.stderr_text())
    assert second["status"] == "completed", (second, app.stderr_text())

    assert len(recorder.sockets) == 1, f"Codex opened {len(recorder.sockets)} sockets"
    socket = recorder.sockets[0]
    requests = turns_on(socket)
    assert len(requests) >= 3, "the warm-up and two sampled turns"
    assert check_deltas_only(socket) == len(requests) - 1
    last_input = requests[-1][0]["input"]
    assert any(
        item.get("role") == "user" and "why WebSocket mode" in json.dumps(item) for item in last_input
    ), last_input
    check_websocket_only(loopwire, recorder, len(requests))


def test_codex_resumed_session_sends_its_reasoning_back(
    codex: Path,
    loopwire: ServerProcess,
    recorder: WireRecorder,
    tmp_path: Path,
) -> None:
    """With `model_reasoning_effort` set, Codex asks for reasoning (`reasoning.effort`, `include:
    ["reasoning.encrypted_content"]`) and the sim engine produces it; `codex exec resume --last` then replays
    the session on a new socket, the reasoning item with loopwire's `encrypted_content` included, which
    loopwire must take back."""
    effort = ("-c", 'model_reasoning_effort="low"')
    first = run_exec(codex, recorder.base_url, tmp_path, PROMPT, "--keep-session", *effort)
    assert first.returncode == 0, first.describe()
    assert any(
        event.get("type") == "item.completed" and event["item"]["type"] == "reasoning"
        for event in first.events
    ), first.describe()
    second = run_exec(codex, recorder.base_url, tmp_path, "And one more sentence.", *effort, resume=True)
    assert second.returncode == 0, second.describe()
    assert not first.outbound() and not second.outbound(), first.outbound() + second.outbound()

    assert len(recorder.sockets) == 2, "one socket per codex process"
    _, answered = turns_on(recorder.sockets[0])[-1]
    produced = [item for item in answered["response"]["output"] if item["type"] == "reasoning"]
    assert produced and produced[0].get("encrypted_content"), answered["response"]["output"]
    replayed, _ = turns_on(recorder.sockets[1])[-1]
    sent_back = [item for item in replayed["input"] if item.get("type") == "reasoning"]
    assert [item.get("encrypted_content") for item in sent_back] == [produced[0]["encrypted_content"]]
    requests = 0
    for socket in recorder.sockets:
        requests += len(turns_on(socket))
        check_deltas_only(socket)
    check_websocket_only(loopwire, recorder, requests)
