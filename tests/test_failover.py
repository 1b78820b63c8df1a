"""Failover behind a real HAProxy: coding agents (loopwire.agent over loopwire.client, WebSocket mode) run
through HAProxy against three `loopwire serve` nodes sharing one real redis-server. The node holding the most
sockets is SIGKILLed mid-conversation; once every agent has moved on, the busiest survivor is stopped with
SIGTERM (it drains: /readyz answers 503, HAProxy takes it out, its sockets close with 1012 after their
running turns). The agents reconnect through HAProxy to the last node: store=true chains continue by id,
store=false chains send their history once more per lost socket. At the end every response an agent saw is
retrievable, every tool call ran exactly once and every call's output reached the model (none lost).

Also: HAProxy's own view of a draining node (/readyz 503 → DOWN while the node still serves)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
from conftest import API_KEY, ServerProcess, make_async_client
from haproxy_process import Backend, HaproxyProcess
from link_cutter import LinkCutter
from redis_server import RedisServer
from test_redis_nodes import metric_sum, start_nodes

from loopwire.agent.fixture import read_fix, write_fixture
from loopwire.agent.loop import AgentConfig, AgentRun, TurnRecord, run_agent
from loopwire.agent.tools import repo_digest
from loopwire.client import Session, SessionOptions
from loopwire.client.backoff import Backoff

NODE_ARGS = (
    "--sim-ttft-ms", "15",
    "--sim-decode-tps", "600",
    "--drain-s", "1",
    "--graceful-shutdown-s", "20",
)  # fmt: skip
EXPLORE = 18
"""Each rollout: EXPLORE + 5 tool calls in EXPLORE + 6 model turns."""
STORES = (True, True, True, False, False, False)
"""One agent per entry: its `store` setting."""
KILL_AT_TURN = 4
"""Every agent has finished this many turns when the first node is SIGKILLed."""
MOVE_ON_TURNS = 3
"""...and this many more when the second is stopped with SIGTERM."""
PHASE_TIMEOUT_S = 90.0


@dataclass(slots=True)
class Progress:
    """Turns finished per agent, for waits on the agents' progress (no sleeps)."""

    turns: list[int]
    done: list[bool]
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def advance(self, index: int, number: int) -> None:
        self.turns[index] = number
        self.changed.set()

    def finish(self, index: int) -> None:
        self.done[index] = True
        self.changed.set()

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(PHASE_TIMEOUT_S):
                while not predicate():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"agents did not reach {what} in {PHASE_TIMEOUT_S:g} s: {self.turns}"
            ) from None

    def everyone_at(self, turns: list[int]) -> Callable[[], bool]:
        return lambda: all(
            done or now >= want for now, want, done in zip(self.turns, turns, self.done, strict=True)
        )


class Observer:
    def __init__(self, progress: Progress, index: int) -> None:
        self.progress, self.index = progress, index

    def turn_started(self, number: int) -> None:
        pass

    def turn_finished(self, record: TurnRecord) -> None:
        self.progress.advance(self.index, record.number)


@dataclass(slots=True)
class Cluster:
    redis: RedisServer
    nodes: list[ServerProcess]
    balancer: HaproxyProcess

    def stored_records(self) -> int:
        """Response records in Redis (every one any node committed)."""
        with redis.Redis(port=self.redis.port) as client:
            return sum(1 for _ in client.scan_iter(match="loopwire:*:r:*", count=1000))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Its own redis-server (so that the records counted are this test's), three nodes, HAProxy."""
    store = RedisServer(tmp_path / "redis", appendfsync="everysec").start()
    balancer: HaproxyProcess | None = None
    nodes: list[ServerProcess] = []
    try:
        nodes = start_nodes(store, tmp_path, 3, *NODE_ARGS)
        balancer = HaproxyProcess(
            tmp_path / "haproxy", [Backend(f"n{index}", node.port) for index, node in enumerate(nodes)]
        ).start()
        yield Cluster(store, nodes, balancer)
    finally:
        if balancer is not None:
            balancer.stop()
        for node in nodes:
            node.stop()
        store.stop()


def open_sockets(node: ServerProcess) -> float:
    try:
        return metric_sum(node, "loopwire_open_connections")
    except (urllib.error.URLError, OSError):
        return -1.0


def busiest(nodes: list[ServerProcess]) -> ServerProcess:
    counts = {id(node): open_sockets(node) for node in nodes}
    node = max(nodes, key=lambda n: counts[id(n)])
    assert counts[id(node)] >= 1, "no node holds an agent's socket"
    return node


def calls_and_outputs(items: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    calls = [str(item["call_id"]) for item in items if item.get("type") == "function_call"]
    outputs = [str(item["call_id"]) for item in items if item.get("type") == "function_call_output"]
    return calls, outputs


async def stored_items(sdk: openai.AsyncOpenAI, response_id: str) -> list[dict[str, Any]]:
    """The whole input of a stored response plus its output, as JSON, paged through input_items."""
    items: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = await sdk.responses.input_items.list(
            response_id, order="asc", limit=100, **({"after": after} if after else {})
        )
        items += [item.model_dump() for item in page.data]
        if not page.has_more:
            break
        after = page.data[-1].id
    response = await sdk.responses.retrieve(response_id)
    return items + [item.model_dump() for item in response.output]


@pytest.mark.timeout(PHASE_TIMEOUT_S * 4)  # the phases' own bounds (90 s each, 180 s to finish) come first
async def test_agents_survive_a_killed_and_a_drained_node_behind_haproxy(
    cluster: Cluster, tmp_path: Path
) -> None:
    nodes, balancer = cluster.nodes, cluster.balancer
    progress = Progress([0] * len(STORES), [False] * len(STORES))
    options = SessionOptions(max_socket_failures=8, connect_timeout_s=10.0, read_timeout_s=30.0)

    async def agent(index: int, store: bool) -> AgentRun:
        repo = tmp_path / f"agent-{index}"
        write_fixture(repo, seed=index)
        config = AgentConfig(
            base_url=balancer.base_url,
            transport="ws",
            api_key=API_KEY,
            store=store,
            explore=EXPLORE,
            seed=index,
            session=options,
            task_note=f"(agent {index})",
        )
        try:
            return await run_agent(repo, read_fix(repo), config, Observer(progress, index))
        finally:
            progress.finish(index)

    tasks = [asyncio.create_task(agent(index, store)) for index, store in enumerate(STORES)]
    try:
        await progress.until(progress.everyone_at([KILL_AT_TURN] * len(STORES)), f"turn {KILL_AT_TURN}")
        assert not any(progress.done), "a rollout ended before the first failure"
        killed = busiest(nodes)
        assert killed.proc is not None
        killed.proc.kill()  # SIGKILL: no drain, no goodbye, sockets reset mid-conversation
        killed.proc.wait(timeout=10)
        survivors = [node for node in nodes if node is not killed]

        moved_on = [turns + MOVE_ON_TURNS for turns in progress.turns]
        await progress.until(progress.everyone_at(moved_on), "turns after the kill")
        assert not all(progress.done), "every rollout ended before the second failure"
        drained = busiest(survivors)
        assert await asyncio.to_thread(drained.stop) is not None  # SIGTERM: drain, then a graceful stop
        last = next(node for node in survivors if node is not drained)

        async with asyncio.timeout(PHASE_TIMEOUT_S * 2):
            runs = await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    assert last.alive()
    sdk = make_async_client(balancer.base_url)
    created = retrievable = 0
    interrupted = replays = reconnects = 0
    try:
        for index, (store, run) in enumerate(zip(STORES, runs, strict=True)):
            # the rollout finished and left the repository fixed
            assert run.finished and "All tests pass" in run.final_text, (index, run.final_text)
            assert run.turn_count == EXPLORE + 6, (index, run.turn_count)
            # every tool call ran exactly once, and its output is in the conversation exactly once
            calls, outputs = calls_and_outputs(run.conversation)
            assert len(calls) == len(set(calls)) == run.tool_calls == EXPLORE + 5, index
            assert sorted(outputs) == sorted(calls), index
            assert run.repo_hash == repo_digest(tmp_path / f"agent-{index}")[0]
            interrupted += sum(turn.interrupted for turn in run.turns)
            reconnects += sum(turn.metrics.reconnects for turn in run.turns)
            later = run.turns[1:]
            if store:
                # continued by id on whichever node served the turn: never a replay of history
                assert all(turn.metrics.sent_delta and not turn.metrics.replayed for turn in later), index
                for turn in run.turns:
                    created += 1
                    fetched = await sdk.responses.retrieve(turn.response_id)
                    retrievable += fetched.id == turn.response_id
                # the stored chain holds every call and its output, each once, in the conversation's order
                chain = await stored_items(sdk, run.turns[-1].response_id)
                assert calls_and_outputs(chain) == calls_and_outputs(run.conversation), index
            else:
                # the lane cache is gone with each lost socket: the history goes once more, on the new one
                full = [turn for turn in later if not turn.metrics.sent_delta]
                assert all(turn.metrics.reconnects or turn.metrics.resends for turn in full), index
                assert not any(turn.metrics.replayed for turn in later), index  # never a wasted delta first
                replays += len(full)
    finally:
        await sdk.close()
    stored = cluster.stored_records()
    summary = {
        "created": created,
        "retrievable": retrievable,
        "lost": created - retrievable,
        "stored_in_redis": stored,
        "interrupted_turns": interrupted,
        "store_false_replays": replays,
        "reconnects": reconnects,
        "last_node_turns": metric_sum(last, "loopwire_turns_total"),
    }
    print("failover:", json.dumps(summary))
    assert retrievable == created == STORES.count(True) * (EXPLORE + 6)
    assert reconnects >= 2 and replays >= 1  # both failures cut sockets; store=false lanes were replayed
    assert stored >= created


def test_haproxy_takes_a_draining_node_out_before_it_stops(redis_server: RedisServer, tmp_path: Path) -> None:
    nodes = start_nodes(redis_server, tmp_path, 2, "--drain-s", "30")
    balancer: HaproxyProcess | None = None
    try:
        balancer = HaproxyProcess(
            tmp_path / "haproxy", [Backend("n0", nodes[0].port), Backend("n1", nodes[1].port)]
        )
        balancer.start()
        assert nodes[0].proc is not None
        nodes[0].proc.terminate()  # SIGTERM: 30 s of drain before the shutdown starts
        balancer.wait_states({"n0": "DOWN", "n1": "UP"}, timeout_s=10)
        # not ready, still serving: its own /healthz and a create sent to it directly both answer
        assert http_status(nodes[0].origin + "/readyz") == 503
        assert http_status(nodes[0].origin + "/healthz") == 200
        sdk = openai.OpenAI(base_url=nodes[0].base_url, api_key=API_KEY, max_retries=0, timeout=20)
        assert sdk.responses.create(model="sim", input="still served while draining").status == "completed"
        assert nodes[0].alive()
        # through the balancer, new work goes to the ready node only
        before = metric_sum(nodes[1], "loopwire_turns_total")
        through = openai.OpenAI(base_url=balancer.base_url, api_key=API_KEY, max_retries=0, timeout=20)
        for index in range(4):
            through.responses.create(model="sim", input=f"through haproxy {index}", store=False)
        assert metric_sum(nodes[1], "loopwire_turns_total") - before == 4
    finally:
        if balancer is not None:
            balancer.stop()
        for node in nodes:
            node.stop()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


async def test_haproxy_routes_a_resume_token_to_the_node_that_issued_it(tmp_path: Path) -> None:
    """Three nodes with reconnect grace behind HAProxy, a client link that is cut four times: each new socket
    presents the dropped one's token, HAProxy sends it to the node named in it, and the lanes come back."""
    nodes = [
        ServerProcess(
            "memory", tmp_path / f"node-{index}.log", ("--resume-grace-s", "60", "--node-id", f"n{index}")
        )
        for index in range(3)
    ]
    balancer: HaproxyProcess | None = None
    cutter: LinkCutter | None = None
    try:
        for node in nodes:
            node.start()
        balancer = HaproxyProcess(
            tmp_path / "haproxy", [Backend(f"n{i}", n.port) for i, n in enumerate(nodes)]
        )
        balancer.start()
        cutter = await LinkCutter(balancer.port).start()
        options = SessionOptions(resume=True, backoff=Backoff(base_s=0.01, max_s=0.05))
        conversation: list[dict[str, Any]] = []
        resumed = 0
        async with Session(
            balancer.base_url, "ws", api_key=API_KEY, store=False, ws_url=cutter.url, options=options
        ) as session:
            for index in range(9):
                if index in (2, 4, 6, 8):
                    cutter.cut()
                conversation.append({"type": "message", "role": "user", "content": f"turn {index}"})
                result = await session.run_turn(conversation, model="sim")
                assert result.status == "completed"
                conversation += result.output
                assert index == 0 or (result.metrics.sent_delta and not result.metrics.replayed), index
                resumed += result.metrics.resumed
        assert resumed == 4
    finally:
        if cutter is not None:
            await cutter.close()
        if balancer is not None:
            balancer.stop()
        for node in nodes:
            node.stop()
