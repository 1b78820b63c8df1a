"""Limits enforced by a live server at their edge: message size over HTTP and WebSocket, connection age."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from conftest import ServerProcess, keyed_post

LIMIT = 4000


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("limits")
    server = ServerProcess(
        "memory",
        tmp / "server.log",
        ("--limit", f"max_message_bytes={LIMIT}", "--limit", "max_connection_age_s=1.5"),
    ).start()
    yield server
    server.stop()


def body_of_size(size: int, **fields: object) -> bytes:
    """A valid create body of exactly `size` bytes (the input text is the padding)."""
    base = {"model": "sim", "input": "", **fields}
    empty = len(json.dumps(base).encode())
    base["input"] = "x" * (size - empty)
    encoded = json.dumps(base).encode()
    assert len(encoded) == size
    return encoded


def post(server: ServerProcess, body: bytes) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        server.base_url + "/responses", data=body, headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_http_body_at_the_limit_passes_and_one_past_is_413(limited: ServerProcess) -> None:
    status, body = post(limited, body_of_size(LIMIT))
    assert status == 200 and body["status"] == "completed"
    status, body = post(limited, body_of_size(LIMIT + 1))
    assert status == 413
    error = body["error"]
    assert (
        isinstance(error, dict)
        and error["code"] == "request_too_large"
        and error["type"]
        and error["message"]
    )
    status, body = post(limited, body_of_size(200))  # the server is unharmed
    assert status == 200


def ws_url(server: ServerProcess) -> str:
    return server.base_url.replace("http://", "ws://") + "/responses"


async def test_ws_frame_at_the_limit_passes_and_one_past_closes_1009(limited: ServerProcess) -> None:
    async with websockets.connect(ws_url(limited), max_size=None) as socket:
        await socket.send(body_of_size(LIMIT, type="response.create").decode())
        while True:
            event = json.loads(await socket.recv())
            assert event["type"] != "error", event
            if event["type"] == "response.completed":
                break
        await socket.send(body_of_size(LIMIT + 1, type="response.create").decode())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await socket.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_idle_connection_is_retired_at_its_age(limited: ServerProcess) -> None:
    async with websockets.connect(ws_url(limited), max_size=None) as socket:
        await socket.send(
            json.dumps({"type": "response.create", "model": "sim", "input": "once", "store": False})
        )
        while json.loads(await socket.recv())["type"] != "response.completed":
            pass
        event = json.loads(await asyncio.wait_for(socket.recv(), timeout=10))  # sent unasked at the age limit
        assert event["type"] == "error"
        assert event["error"]["code"] == "websocket_connection_limit_reached"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await socket.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


@pytest.fixture(scope="module")
def slow_and_short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("retire")
    server = ServerProcess(
        "memory", tmp / "server.log", ("--limit", "max_connection_age_s=1", "--sim-ttft-ms", "800")
    ).start()
    yield server
    server.stop()


async def test_a_turn_running_at_the_age_limit_finishes_before_the_close(
    slow_and_short_lived: ServerProcess,
) -> None:
    async with websockets.connect(ws_url(slow_and_short_lived), max_size=None) as socket:
        await asyncio.sleep(0.5)
        await socket.send(
            json.dumps({"type": "response.create", "model": "sim", "input": "slow", "store": False})
        )
        types = []
        while True:
            event = json.loads(await asyncio.wait_for(socket.recv(), timeout=10))
            types.append(event["type"])
            if event["type"] in ("error", "response.completed", "response.failed"):
                break
        assert types[0] == "response.created" and types[-1] == "response.completed", types
        event = json.loads(await asyncio.wait_for(socket.recv(), timeout=10))
        assert event["type"] == "error" and event["error"]["code"] == "websocket_connection_limit_reached"
        with pytest.raises(websockets.ConnectionClosed):
            await socket.recv()


@pytest.fixture(scope="module")
def strict_limits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("strict")
    server = ServerProcess(
        "memory",
        tmp / "server.log",
        (
            "--limit",
            "rate_limit_per_s=2",
            "--limit",
            "rate_limit_burst=3",
            "--limit",
            "max_connections_per_key=2",
            "--limit",
            "idle_timeout_s=1",
        ),
    ).start()
    yield server
    server.stop()


def test_rate_limit_per_key_at_its_burst_then_429_with_retry_after(strict_limits: ServerProcess) -> None:
    statuses = [keyed_post(strict_limits, "rate-key-a")[0] for _ in range(3)]
    assert statuses == [200, 200, 200]  # the burst
    status, headers, body = keyed_post(strict_limits, "rate-key-a")
    assert status == 429
    assert int(headers["retry-after"]) >= 1
    error = body["error"]
    assert (
        isinstance(error, dict)
        and error["code"] == "rate_limit_exceeded"
        and error["type"] == "rate_limit_error"
    )
    assert keyed_post(strict_limits, "rate-key-b")[0] == 200  # another key has its own bucket


async def test_rate_limit_over_websocket_is_an_error_event_with_status_429(
    strict_limits: ServerProcess,
) -> None:
    url = ws_url(strict_limits)
    async with websockets.connect(url, additional_headers={"Authorization": "Bearer rate-key-ws"}) as socket:
        outcomes = []
        for index in range(4):
            frame = {
                "type": "response.create",
                "model": "sim",
                "input": "x",
                "store": False,
                "stream_id": f"lane-{index}",
            }
            await socket.send(json.dumps(frame))
        while len(outcomes) < 4:
            event = json.loads(await socket.recv())
            if event["type"] in ("response.completed", "error"):
                outcomes.append(event)
        limited = [event for event in outcomes if event["type"] == "error"]
        assert len(limited) == 1 and limited[0]["status"] == 429
        assert limited[0]["error"]["code"] == "rate_limit_exceeded" and limited[0]["stream_id"] == "lane-3"


async def test_connections_per_key_at_the_limit_pass_and_one_past_gets_429(
    strict_limits: ServerProcess,
) -> None:
    url = ws_url(strict_limits)
    header = {"Authorization": "Bearer conn-key"}
    async with (
        websockets.connect(url, additional_headers=header),
        websockets.connect(url, additional_headers=header),
    ):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url, additional_headers=header):
                pass
        assert refused.value.response.status_code == 429
        async with websockets.connect(url, additional_headers={"Authorization": "Bearer other-key"}):
            pass
    async with websockets.connect(url, additional_headers=header):  # closed ones no longer count
        pass


async def test_an_idle_connection_is_closed_and_a_busy_one_is_not(strict_limits: ServerProcess) -> None:
    url = ws_url(strict_limits)
    async with websockets.connect(url, additional_headers={"Authorization": "Bearer idle-key"}) as socket:
        for _ in range(3):  # activity every 0.5 s keeps it open past the 1 s idle limit
            with pytest.raises(TimeoutError):  # nothing arrives: still open, not retired
                await asyncio.wait_for(socket.recv(), timeout=0.5)
            await socket.send(json.dumps({"type": "response.processed"}))
        last_activity = time.monotonic()
        event = json.loads(await asyncio.wait_for(socket.recv(), timeout=10))
        assert time.monotonic() - last_activity >= 0.9  # a lower bound only: the machine is noisy
        assert event["type"] == "error" and event["error"]["code"] == "websocket_idle_timeout"
        with pytest.raises(websockets.ConnectionClosed):
            await socket.recv()


@pytest.fixture(scope="module")
def small_budget(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("budget")
    server = ServerProcess(
        f"sqlite:{tmp}/db.sqlite", tmp / "server.log", ("--limit", "cache_budget_bytes=20000")
    ).start()
    yield server
    server.stop()


async def ws_turn(socket: websockets.ClientConnection, **fields: object) -> dict[str, object]:
    await socket.send(json.dumps({"type": "response.create", "model": "sim", **fields}))
    while True:
        event = json.loads(await socket.recv())
        if event["type"] in ("response.completed", "error"):
            return dict(event)


async def test_the_memory_budget_evicts_the_idle_lane_of_another_connection(
    small_budget: ServerProcess,
) -> None:
    url = ws_url(small_budget)
    big = "y" * 15_000
    async with websockets.connect(url) as first, websockets.connect(url) as second:
        unstored = await ws_turn(first, input=big, store=False, stream_id="a")
        stored = await ws_turn(first, input=big, store=True, stream_id="b")
        assert unstored["type"] == stored["type"] == "response.completed"
        assert (await ws_turn(second, input=big, store=False))[
            "type"
        ] == "response.completed"  # over budget now
        unstored_id = unstored["response"]["id"]  # type: ignore[index]
        stored_id = stored["response"]["id"]  # type: ignore[index]
        gone = await ws_turn(
            first, input="more", store=False, previous_response_id=unstored_id, stream_id="a"
        )
        assert gone["type"] == "error" and gone["error"]["code"] == "previous_response_not_found"  # type: ignore[index]
        kept = await ws_turn(first, input="more", store=False, previous_response_id=stored_id, stream_id="b")
        assert kept["type"] == "response.completed"  # evicted from memory, resolved from the store
    text = await asyncio.to_thread(read_metrics, small_budget)
    assert 'loopwire_cache_evictions_total{reason="budget"}' in text


def read_metrics(server: ServerProcess) -> str:
    with urllib.request.urlopen(f"{server.origin}/metrics", timeout=10) as reply:
        return str(reply.read().decode())
