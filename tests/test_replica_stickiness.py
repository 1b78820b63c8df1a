"""Engine replicas across nodes: three `loopwire serve` nodes (openai-chat engine, one real Redis) in front of
the same three chat-completions replicas (real aiohttp servers on loopback replaying a vLLM stream). Each
conversation hops node to node and between HTTP and WebSocket mode on every turn; every node must send all
of its turns to one replica (rendezvous hashing on the conversation's root response id, or on the client's
prompt_cache_key), while different conversations spread over the replicas."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import ServerProcess, make_async_client
from fake_chat_upstream import FakeUpstream
from redis_server import RedisServer
from test_redis_nodes import start_nodes

CONVERSATIONS = 12
TURNS = 6


@pytest.fixture
async def replicas() -> AsyncIterator[list[FakeUpstream]]:
    started = [await FakeUpstream().start() for _ in range(3)]
    yield started
    for replica in started:
        await replica.close()


async def ws_turn(sdk: openai.AsyncOpenAI, **fields: Any) -> str:
    """One turn on a fresh socket (so a continuation resolves from the store); the response id."""
    async with sdk.responses.connect() as connection:
        await connection.response.create(**fields)
        async for event in connection:
            if event.type in ("response.completed", "response.failed", "error"):
                assert event.type == "response.completed", event
                return event.response.id
    raise AssertionError("the socket closed mid-turn")


def conversation_of(received_body: dict[str, Any]) -> str:
    first = received_body["messages"][0]
    assert first["role"] == "user"
    return str(first["content"]).split(":", 1)[0]


async def test_every_node_sends_a_conversation_to_the_same_replica(
    redis_server: RedisServer, replicas: list[FakeUpstream], tmp_path: Path
) -> None:
    upstreams = ",".join(replica.base_url for replica in replicas)
    nodes: list[ServerProcess] = start_nodes(
        redis_server, tmp_path, 3, "--engine", "openai-chat", "--upstream", upstreams
    )
    clients = [make_async_client(node.base_url) for node in nodes]
    try:
        for number in range(CONVERSATIONS):
            keyed = number % 4 == 3  # every fourth conversation names its own prompt_cache_key
            extra = {"prompt_cache_key": f"pck-{number}"} if keyed else {}
            previous: str | None = None
            for turn in range(TURNS):
                sdk = clients[(number + turn) % len(clients)]
                fields: dict[str, Any] = {
                    "model": "vllm_text",
                    "input": f"conversation {number}: turn {turn}",
                    **extra,
                }
                if previous is not None:
                    fields["previous_response_id"] = previous
                if turn % 2:
                    previous = await ws_turn(sdk, **fields)
                else:
                    previous = (await sdk.responses.create(**fields)).id
    finally:
        for sdk in clients:
            await sdk.close()
        for node in nodes:
            node.stop()

    served: dict[str, list[int]] = defaultdict(list)
    keys: dict[str, set[str]] = defaultdict(set)
    for index, replica in enumerate(replicas):
        for received in replica.received:
            conversation = conversation_of(received.body)
            served[conversation].append(index)
            keys[conversation].add(received.headers["X-Loopwire-Cache-Key"])
    assert len(served) == CONVERSATIONS and all(len(turns) == TURNS for turns in served.values())
    # a hit: the turn went to the replica that served the conversation's previous turn (its prefix cache)
    hits = sum(a == b for turns in served.values() for a, b in pairwise(turns))
    assert hits == CONVERSATIONS * (TURNS - 1), dict(served)
    assert all(len(tokens) == 1 for tokens in keys.values())  # one opaque key per conversation, every node
    spread = Counter(turns[0] for turns in served.values())
    assert len(spread) >= 2, spread  # conversations are spread over the replicas
    rate = hits / (CONVERSATIONS * (TURNS - 1))
    summary = {"hit_rate": rate, "per_replica": spread, "turns": CONVERSATIONS * TURNS}
    print("stickiness:", json.dumps(summary))
