"""Several `loopwire serve` nodes on one real redis-server, driven by the official SDK: a chain begun on one
node continues on another over HTTP and WebSocket mode (store fallback), a delete on one is seen by the
other, the per-key rate and connection cap hold across nodes (and a SIGKILLed node's connections are
released after their lease), and each node's /metrics counts only its own turns."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import websockets
from conftest import API_KEY, ServerProcess, keyed_post, make_async_client, make_client
from redis_server import RedisClusterProcesses, RedisServer

from loopwire.bench import processes


def start_nodes(
    redis: RedisServer | RedisClusterProcesses, directory: Path, count: int, *extra: str
) -> list[ServerProcess]:
    return processes.start_nodes(count, redis.url, directory, extra)


@pytest.fixture(scope="module")
def nodes(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServerProcess]]:
    started = start_nodes(redis_server, tmp_path_factory.mktemp("nodes"), 2)
    yield started
    for node in started:
        node.stop()


def user_texts(client: openai.OpenAI, response_id: str) -> list[str]:
    items = client.responses.input_items.list(response_id, order="asc", limit=100)
    return [item.content[0].text for item in items.data if item.type == "message" and item.role == "user"]  # type: ignore[union-attr]


def test_a_chain_continues_on_another_node_over_http_and_a_delete_is_seen_everywhere(
    nodes: list[ServerProcess],
) -> None:
    a, b = (make_client(node.base_url) for node in nodes)
    first = a.responses.create(model="sim", input="turn 0 on A")
    second = b.responses.create(model="sim", input="turn 1 on B", previous_response_id=first.id)
    third = a.responses.create(model="sim", input="turn 2 on A", previous_response_id=second.id)
    assert [r.status for r in (first, second, third)] == ["completed"] * 3
    assert user_texts(b, third.id) == ["turn 0 on A", "turn 1 on B", "turn 2 on A"]
    assert b.responses.retrieve(first.id).id == first.id
    page = b.responses.input_items.list(third.id, order="asc", limit=2)  # paging, served by the other node
    rest = b.responses.input_items.list(third.id, order="asc", limit=100, after=page.data[-1].id)
    everything = a.responses.input_items.list(third.id, order="asc", limit=100)
    assert page.has_more and [i.id for i in page.data + rest.data] == [i.id for i in everything.data]

    a.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.delete(second.id)
    after = b.responses.create(model="sim", input="turn 3 on B", previous_response_id=third.id)
    assert user_texts(a, after.id)[-1] == "turn 3 on B"  # a deleted ancestor still carries the chain


async def ws_turn(connection: object, **fields: object) -> object:
    await connection.response.create(model="sim", **fields)  # type: ignore[attr-defined]
    async for event in connection:  # type: ignore[attr-defined]
        if event.type in ("response.completed", "response.failed", "error"):
            return event
    raise AssertionError("the connection closed mid-turn")


async def test_websocket_mode_continues_a_chain_stored_by_another_node(nodes: list[ServerProcess]) -> None:
    a, b = (make_async_client(node.base_url) for node in nodes)
    try:
        started = await a.responses.create(model="sim", input="begun over HTTP on A")
        async with b.responses.connect() as on_b:
            first = await ws_turn(
                on_b, input="continued over WebSocket on B", previous_response_id=started.id
            )
            assert first.type == "response.completed"  # type: ignore[attr-defined]
            second = await ws_turn(on_b, input="and again on B", previous_response_id=first.response.id)  # type: ignore[attr-defined]
            assert second.type == "response.completed"  # type: ignore[attr-defined]
        async with a.responses.connect() as on_a:  # back on A, over its own WebSocket
            third = await ws_turn(on_a, input="finished on A", previous_response_id=second.response.id)  # type: ignore[attr-defined]
            assert third.type == "response.completed"  # type: ignore[attr-defined]
        items = await a.responses.input_items.list(third.response.id, order="asc", limit=100)  # type: ignore[attr-defined]
        texts = [i.content[0].text for i in items.data if i.type == "message" and i.role == "user"]  # type: ignore[union-attr]
        assert texts == [
            "begun over HTTP on A",
            "continued over WebSocket on B",
            "and again on B",
            "finished on A",
        ]
    finally:
        await a.close()
        await b.close()


def metric_sum(node: ServerProcess, name: str) -> float:
    with urllib.request.urlopen(f"{node.origin}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def test_each_node_keeps_its_own_metrics(nodes: list[ServerProcess]) -> None:
    a_node, b_node = nodes
    before = metric_sum(a_node, "loopwire_turns_total"), metric_sum(b_node, "loopwire_turns_total")
    a, b = make_client(a_node.base_url), make_client(b_node.base_url)
    for index in range(3):
        a.responses.create(model="sim", input=f"on A {index}", store=False)
    b.responses.create(model="sim", input="on B", store=False)
    after = metric_sum(a_node, "loopwire_turns_total"), metric_sum(b_node, "loopwire_turns_total")
    assert (after[0] - before[0], after[1] - before[1]) == (3, 1)
    a.responses.retrieve(a.responses.create(model="sim", input="warm-up").id)  # scripts loaded in Redis
    trips = [metric_sum(node, "loopwire_store_round_trips_total") for node in nodes]
    stored = a.responses.create(model="sim", input="stored on A")  # one put
    a.responses.retrieve(stored.id)  # one get
    assert metric_sum(a_node, "loopwire_store_round_trips_total") - trips[0] == 2
    assert metric_sum(b_node, "loopwire_store_round_trips_total") == trips[1]
    assert metric_sum(a_node, "loopwire_store_up") == metric_sum(b_node, "loopwire_store_up") == 1


# -- limits across nodes -----------------------------------------------------------------------------------

LEASE_S = 3.0


@pytest.fixture
def limited_nodes(redis_server: RedisServer, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    started = start_nodes(
        redis_server,
        tmp_path,
        2,
        "--limit", "rate_limit_per_s=0.1",
        "--limit", "rate_limit_burst=4",
        "--limit", "max_connections_per_key=2",
        "--connection-lease-s", str(LEASE_S),
    )  # fmt: skip
    yield started
    for node in started:
        node.stop()


def test_the_rate_limit_holds_across_nodes(limited_nodes: list[ServerProcess]) -> None:
    a, b = limited_nodes
    key = f"rate-{time.time_ns()}"
    statuses = [keyed_post(node, key)[0] for node in (a, b, a, b)]
    assert statuses == [200, 200, 200, 200]  # the burst of 4, spent on two nodes
    assert keyed_post(a, key)[0] == 429
    assert keyed_post(b, key)[0] == 429  # one bucket for the key, not one per node
    assert keyed_post(b, key + "-other")[0] == 200


def ws_url(node: ServerProcess) -> str:
    return node.base_url.replace("http://", "ws://") + "/responses"


async def refused(node: ServerProcess, key: str) -> int | None:
    """The status of a refused upgrade, or None when it was accepted (and closed again)."""
    try:
        async with websockets.connect(ws_url(node), additional_headers={"Authorization": f"Bearer {key}"}):
            return None
    except websockets.InvalidStatus as error:
        return int(error.response.status_code)


async def test_the_connection_cap_holds_across_nodes(limited_nodes: list[ServerProcess]) -> None:
    a, b = limited_nodes
    key = f"conn-{time.time_ns()}"
    header = {"Authorization": f"Bearer {key}"}
    async with websockets.connect(ws_url(a), additional_headers=header):
        async with websockets.connect(ws_url(b), additional_headers=header):
            assert await refused(a, key) == 429
            assert await refused(b, key) == 429
            assert await refused(b, key + "-other") is None
        for _ in range(50):  # the close on B gives its place back (asynchronously, one round trip)
            if await refused(a, key) is None:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the closed connection's place was not given back")


async def test_a_killed_node_releases_its_connections_after_the_lease(
    limited_nodes: list[ServerProcess],
) -> None:
    a, b = limited_nodes
    key = f"kill-{time.time_ns()}"
    header = {"Authorization": f"Bearer {key}"}
    first = await websockets.connect(ws_url(a), additional_headers=header)
    second = await websockets.connect(ws_url(a), additional_headers=header)
    try:
        await asyncio.sleep(LEASE_S)  # outlive one lease: the heartbeat keeps them counted
        assert await refused(b, key) == 429
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        assert a.proc.wait(timeout=10) == -signal.SIGKILL
        assert await refused(b, key) == 429  # not yet: the dead node's leases run out first
        while (status := await refused(b, key)) is not None:
            assert status == 429
            assert time.monotonic() - killed < LEASE_S + 5, "the dead node's connections were never released"
            await asyncio.sleep(0.1)
        assert time.monotonic() - killed >= LEASE_S / 3  # a lower bound only: the last heartbeat's age varies
    finally:
        for socket in (first, second):
            await socket.close()


async def test_a_store_true_turn_resumes_on_the_other_node_after_a_sigkill(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The store half of failover: what one node stored is continued by the other after it dies."""
    a_node, b_node = start_nodes(redis_server, tmp_path, 2)
    try:
        url = ws_url(a_node)
        async with websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {API_KEY}"}
        ) as socket:
            previous = None
            for index in range(5):
                body = {"type": "response.create", "model": "sim", "input": f"turn {index}"}
                if previous:
                    body["previous_response_id"] = previous
                await socket.send(json.dumps(body))
                while (event := json.loads(await socket.recv()))["type"] != "response.completed":
                    assert event["type"] != "error", event
                previous = event["response"]["id"]
            assert a_node.proc is not None
            a_node.proc.send_signal(signal.SIGKILL)
        assert a_node.proc.wait(timeout=10) == -signal.SIGKILL
        b = make_client(b_node.base_url)
        follow = b.responses.create(model="sim", input="on B after A died", previous_response_id=previous)
        assert user_texts(b, follow.id) == [f"turn {i}" for i in range(5)] + ["on B after A died"]
    finally:
        a_node.stop()
        b_node.stop()


async def test_two_nodes_on_a_redis_cluster_share_chains_and_limits(
    redis_cluster: RedisClusterProcesses, tmp_path: Path
) -> None:
    """The same on a three-master Redis Cluster: records, the token bucket and the leases all route by the
    owner's hash tag."""
    a_node, b_node = start_nodes(
        redis_cluster,
        tmp_path,
        2,
        "--limit", "max_connections_per_key=1",
    )  # fmt: skip
    try:
        a, b = make_client(a_node.base_url), make_client(b_node.base_url)
        first = a.responses.create(model="sim", input="on A, in the cluster")
        second = b.responses.create(model="sim", input="on B", previous_response_id=first.id)
        assert user_texts(a, second.id) == ["on A, in the cluster", "on B"]
        key = f"cluster-{time.time_ns()}"
        async with websockets.connect(ws_url(a_node), additional_headers={"Authorization": f"Bearer {key}"}):
            assert await refused(b_node, key) == 429
    finally:
        a_node.stop()
        b_node.stop()
