"""SIGTERM: a turn running on a WebSocket finishes, the socket is then closed with 1012, and every
store=true response that completed before the stop is retrievable and continuable after a restart, and
after a kill -9 (of the server, and of redis-server with a Redis store)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import openai
import pytest
import websockets
from conftest import API_KEY, ServerProcess, chained_ws_turns, make_client
from redis_server import RedisServer


async def test_sigterm_lets_running_turns_finish_then_closes_1012(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite"
    server = ServerProcess(f"sqlite:{database}", tmp_path / "server.log", ("--sim-ttft-ms", "1500")).start()
    try:
        url = server.base_url.replace("http://", "ws://") + "/responses"
        auth = {"Authorization": f"Bearer {API_KEY}"}  # the same owner as make_client's
        async with websockets.connect(url, additional_headers=auth) as socket:
            await socket.send(json.dumps({"type": "response.create", "model": "sim", "input": "quick"}))
            while (first := json.loads(await socket.recv()))["type"] != "response.completed":
                pass
            await socket.send(
                json.dumps(
                    {
                        "type": "response.create",
                        "model": "sim",
                        "input": "slow one",
                        "previous_response_id": first["response"]["id"],
                    }
                )
            )
            assert json.loads(await socket.recv())["type"] == "response.created"
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)  # the server is draining now; a new request is refused, not queued
            await socket.send(json.dumps({"type": "response.create", "model": "sim", "input": "too late"}))
            refusals = []
            while True:  # the running turn's events, with the refusal of the late request among them
                event = json.loads(await asyncio.wait_for(socket.recv(), timeout=15))
                if event["type"] == "error":
                    refusals.append(event["error"]["code"])
                if event["type"] == "response.completed":
                    second = event["response"]
                    break
                assert event["type"] != "response.failed", event
            assert refusals == ["server_shutting_down"]
            goodbye = json.loads(await asyncio.wait_for(socket.recv(), timeout=15))
            assert goodbye["type"] == "error" and goodbye["error"]["code"] == "server_shutting_down"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), timeout=15)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        server.stop()

    restarted = ServerProcess(f"sqlite:{database}", tmp_path / "server2.log").start()
    try:
        client = make_client(restarted.base_url)
        assert client.responses.retrieve(first["response"]["id"]).status == "completed"
        assert client.responses.retrieve(second["id"]).status == "completed"
        follow = client.responses.create(
            model="sim", input="after the restart", previous_response_id=second["id"]
        )
        assert follow.status == "completed"
        items = client.responses.input_items.list(follow.id, order="asc", limit=100)
        texts = [
            item.content[0].text for item in items.data if item.type == "message" and item.role == "user"
        ]
        assert texts == ["quick", "slow one", "after the restart"]
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve("resp_never_made")
    finally:
        restarted.stop()


@pytest.mark.parametrize("store", ["sqlite", "redis-always", "redis-everysec"])
async def test_kill_9_loses_no_stored_response_that_completed(tmp_path: Path, store: str) -> None:
    """With the default inline SQLite writes, a response is committed before its terminal event, so
    killing the server the moment a turn completes loses nothing. With Redis (AOF on, appendfsync always
    or everysec, as docs/deployment.md says) the server and redis-server are both killed with SIGKILL: a
    write Redis answered has reached the kernel, so a process crash of Redis loses nothing either (only
    an OS crash or power loss can cost everysec its last second)."""
    redis: RedisServer | None = None
    if store == "sqlite":
        spec = f"sqlite:{tmp_path / 'db.sqlite'}"
    else:
        redis = RedisServer(tmp_path / "redis", appendfsync=store.removeprefix("redis-")).start()
        spec = redis.url
    server = ServerProcess(spec, tmp_path / "server.log").start()
    completed: list[str] = []
    try:
        url = server.base_url.replace("http://", "ws://") + "/responses"
        async with websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {API_KEY}"}
        ) as socket:
            completed = await chained_ws_turns(socket, 30)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGKILL)  # at once, after the last terminal event
            if redis is not None:
                redis.kill()
        assert server.proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        server.stop()

    if redis is not None:
        redis.start()  # the same port and data directory: it loads the AOF
    restarted = ServerProcess(spec, tmp_path / "server2.log").start()
    try:
        client = make_client(restarted.base_url)
        for response_id in completed:
            assert client.responses.retrieve(response_id).status == "completed"
        follow = client.responses.create(
            model="sim", input="after the crash", previous_response_id=completed[-1]
        )
        items = client.responses.input_items.list(follow.id, order="asc", limit=100)
        texts = [
            item.content[0].text for item in items.data if item.type == "message" and item.role == "user"
        ]
        assert texts == [f"turn {index}" for index in range(30)] + ["after the crash"]
    finally:
        restarted.stop()
        if redis is not None:
            redis.stop()
