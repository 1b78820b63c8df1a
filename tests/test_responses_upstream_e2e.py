"""End to end: `loopwire serve --engine responses` in front of a real upstream, another `loopwire serve`
(sim engine, with its own API key), driven by the official `openai` SDK over HTTP and WebSocket mode.

The sim is deterministic in its prompt, so a conversation through the gateway must give exactly what the
same conversation gives straight against the upstream. What the upstream received is read from its own
/metrics (bytes, parent lookups), which is how "only the delta went upstream" is checked.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import ServerProcess, free_port
from openai.resources.responses.responses import AsyncResponsesConnection as Connection

UPSTREAM_KEY = "sk-upstream-only"
TERMINAL = {"response.completed", "response.failed", "response.incomplete", "error"}
READ_FILE: dict[str, Any] = {
    "type": "function",
    "name": "read_file",
    "description": "Read a file of the repository.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
}
BIG_OUTPUT = "def parse(line):\n    return line.split(',')\n" * 600  # ~26 KB of tool output


def metric(server: ServerProcess, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"{server.origin}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    found = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def ws_bytes(server: ServerProcess) -> float:
    return metric(server, "loopwire_bytes_received_total", 'transport="ws"')


def http_bytes(server: ServerProcess) -> float:
    return metric(server, "loopwire_bytes_received_total", 'transport="http"')


def lookups(server: ServerProcess, result: str) -> float:
    return metric(server, "loopwire_parent_lookups_total", f'result="{result}"')


def sdk(base_url: str, key: str = "sk-client") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=20.0)


async def ws_turn(connection: Connection, **fields: Any) -> Any:
    await connection.response.create(**fields)
    while True:
        event = await asyncio.wait_for(connection.recv(), 10.0)
        if event.type in TERMINAL:
            return event


def gateway_args(upstream: str, *options: str) -> tuple[str, ...]:
    args = ["--engine", "responses", "--upstream", upstream]
    for option in options:
        args += ["--engine-option", option]
    return tuple(args)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("responses-gateway")
    (directory / "keys").write_text(UPSTREAM_KEY + "\n")
    return directory


@pytest.fixture(scope="module")
def upstream(workdir: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        f"sqlite:{workdir / 'up.db'}", workdir / "up.log", ("--api-keys", str(workdir / "keys"))
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def gateway(upstream: ServerProcess, workdir: Path) -> Iterator[ServerProcess]:
    env = {"LOOPWIRE_UPSTREAM_API_KEY": UPSTREAM_KEY}
    proc = ServerProcess("memory", workdir / "gw.log", gateway_args(upstream.base_url), env=env)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def http_gateway(upstream: ServerProcess, workdir: Path) -> Iterator[ServerProcess]:
    env = {"LOOPWIRE_UPSTREAM_API_KEY": UPSTREAM_KEY}
    args = gateway_args(upstream.base_url, "transport=http")
    proc = ServerProcess("memory", workdir / "gw-http.log", args, env=env)
    proc.start()
    yield proc
    proc.stop()


async def conversation(base_url: str, key: str, on_turn: Any = None) -> list[Any]:
    """Three WebSocket turns with store=false: a required tool call, its ~26 KB output answered in text,
    then a user follow-up. `on_turn(n)` runs before turn n (n = 1, 2, 3)."""
    client = sdk(base_url, key)
    done: list[Any] = []
    try:
        async with client.responses.connect() as connection:
            common: dict[str, Any] = {"model": "sim", "tools": [READ_FILE], "store": False}
            if on_turn:
                on_turn(1)
            first = await ws_turn(
                connection,
                input="Fix the parser.",
                instructions="Be brief.",
                tool_choice="required",
                **common,
            )
            done.append(first)
            call = first.response.output[0]
            if on_turn:
                on_turn(2)
            output = {"type": "function_call_output", "call_id": call.call_id, "output": BIG_OUTPUT}
            second = await ws_turn(
                connection, input=[output], previous_response_id=first.response.id, **common
            )
            done.append(second)
            if on_turn:
                on_turn(3)
            follow_up = "And the tests?"
            third = await ws_turn(
                connection, input=follow_up, previous_response_id=second.response.id, **common
            )
            done.append(third)
    finally:
        await client.close()
    return done


def summary(event: Any) -> tuple[str, list[tuple[str, str]], str, int, int]:
    response = event.response
    calls = [(item.name, item.arguments) for item in response.output if item.type == "function_call"]
    return event.type, calls, response.output_text, response.usage.input_tokens, response.usage.output_tokens


async def test_websocket_turns_match_the_upstream_and_continue_it_with_only_the_delta(
    upstream: ServerProcess, gateway: ServerProcess
) -> None:
    direct = await conversation(upstream.base_url, UPSTREAM_KEY)
    marks: dict[int, tuple[float, float]] = {}
    through = await conversation(
        gateway.base_url,
        "sk-client",
        lambda n: marks.__setitem__(n, (ws_bytes(upstream), lookups(upstream, "cache"))),
    )
    after = (ws_bytes(upstream), lookups(upstream, "cache"))

    assert [summary(event) for event in through] == [summary(event) for event in direct]
    assert [event.type for event in through] == ["response.completed"] * 3
    first, second, third = through
    assert first.response.output[0].type == "function_call"
    assert first.response.output[0].call_id.startswith("call_")  # the upstream's call id, passed through
    assert second.response.output_text and third.response.output_text
    assert third.response.usage.input_tokens > second.response.usage.input_tokens > 26_000 // 8

    # turn 2 carried the 26 KB output; turn 3 sent only the follow-up, not the history, as a continuation
    # that the upstream served from its connection cache
    turn2_bytes = marks[3][0] - marks[2][0]
    turn3_bytes = after[0] - marks[3][0]
    assert turn2_bytes > len(BIG_OUTPUT)
    assert turn3_bytes < 2_000, turn3_bytes
    assert marks[3][1] - marks[2][1] == 1 and after[1] - marks[3][1] == 1
    assert third.response.usage.input_tokens_details.cached_tokens > 0


async def test_http_client_streams_events_and_continues_through_the_store(
    upstream: ServerProcess, gateway: ServerProcess
) -> None:
    client = sdk(gateway.base_url)
    try:
        stream = await client.responses.create(
            model="sim", input="What colour is the sky?", instructions="Be brief.", stream=True
        )
        events = [event async for event in stream]
        assert [event.sequence_number for event in events] == list(range(len(events)))
        assert events[0].type == "response.created" and events[-1].type == "response.completed"
        deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
        first = events[-1].response
        assert deltas == first.output_text and first.output_text
        second = await client.responses.create(model="sim", input="Why?", previous_response_id=first.id)
    finally:
        await client.close()
    direct = sdk(upstream.base_url, UPSTREAM_KEY)
    try:
        one = await direct.responses.create(
            model="sim", input="What colour is the sky?", instructions="Be brief."
        )
        two = await direct.responses.create(model="sim", input="Why?", previous_response_id=one.id)
    finally:
        await direct.close()
    assert (first.output_text, second.output_text) == (one.output_text, two.output_text)
    assert second.usage is not None and two.usage is not None
    assert second.usage.input_tokens == two.usage.input_tokens


async def test_http_transport_chains_upstream_with_previous_response_id(
    upstream: ServerProcess, http_gateway: ServerProcess
) -> None:
    client = sdk(http_gateway.base_url)
    try:
        async with client.responses.connect() as connection:
            first = await ws_turn(
                connection, model="sim", input=[{"role": "user", "content": BIG_OUTPUT}], store=False
            )
            assert first.type == "response.completed"
            bytes_before, store_hits = http_bytes(upstream), lookups(upstream, "store")
            second = await ws_turn(
                connection,
                model="sim",
                input="Summarise.",
                previous_response_id=first.response.id,
                store=False,
            )
    finally:
        await client.close()
    assert second.type == "response.completed" and second.response.output_text
    assert http_bytes(upstream) - bytes_before < 2_000  # the delta, not the 26 KB history
    assert lookups(upstream, "store") - store_hits == 1  # resolved from the upstream's store
    assert second.response.usage.input_tokens > len(BIG_OUTPUT) // 8


async def test_a_restarted_upstream_gets_a_new_socket_then_the_full_history(workdir: Path) -> None:
    """The upstream restarts (memory store): the lane's socket is gone and so is the upstream response.
    The gateway redials, the upstream answers previous_response_not_found, the gateway replays the whole
    history, and the lane then continues on the new socket with only its delta."""
    upstream = ServerProcess("memory", workdir / "restart-up.log", port=free_port())
    upstream.start()
    gateway = ServerProcess("memory", workdir / "restart-gw.log", gateway_args(upstream.base_url))
    gateway.start()
    client = sdk(gateway.base_url)
    try:
        async with client.responses.connect() as connection:
            first = await ws_turn(connection, model="sim", input=[{"role": "user", "content": BIG_OUTPUT}])
            assert first.type == "response.completed"
            upstream.stop()
            upstream.start()
            second = await ws_turn(
                connection, model="sim", input="Go on.", previous_response_id=first.response.id
            )
            assert second.type == "response.completed", second
            assert lookups(upstream, "not_found") == 1
            assert ws_bytes(upstream) > len(BIG_OUTPUT)  # a small delta attempt, then the whole history
            before = ws_bytes(upstream)
            third = await ws_turn(
                connection, model="sim", input="More.", previous_response_id=second.response.id
            )
            assert third.type == "response.completed"
            assert ws_bytes(upstream) - before < 2_000
            assert lookups(upstream, "cache") == 1
    finally:
        await client.close()
        gateway.stop()
        upstream.stop()


# -- faults, against the fake --------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[Any]:
    from fake_responses_upstream import FakeResponsesUpstream

    upstream = await FakeResponsesUpstream().start()
    yield upstream
    await upstream.close()


@pytest.fixture(scope="module")
def fault_gateway(fake: Any, workdir: Path) -> Iterator[ServerProcess]:
    args = gateway_args(fake.base_url, "first_byte_timeout_s=2", "idle_timeout_s=0.5")
    proc = ServerProcess("memory", workdir / "gw-fault.log", args)
    proc.start()
    yield proc
    proc.stop()


async def test_a_refused_upgrade_falls_back_to_http_and_still_continues_with_the_delta(
    fake: Any, fault_gateway: ServerProcess
) -> None:
    client = sdk(fault_gateway.base_url)
    try:
        async with client.responses.connect() as connection:
            first = await ws_turn(connection, model="ok", input="hi", instructions="Be kind.")
            second = await ws_turn(
                connection, model="ok", input="again", previous_response_id=first.response.id
            )
    finally:
        await client.close()
    assert first.type == second.type == "response.completed"
    assert first.response.output_text == "Hello world"
    usage = first.response.usage
    assert (usage.input_tokens, usage.input_tokens_details.cached_tokens, usage.output_tokens) == (21, 5, 2)
    assert fake.upgrades == 1  # `auto` stays on HTTP after a refusal
    previous, last = fake.bodies[-2:]
    assert previous["instructions"] == "Be kind." and "previous_response_id" not in previous
    assert last["previous_response_id"] == f"resp_fake{fake.counter - 1}"  # the upstream's id, not ours
    assert last["input"] == [{"type": "message", "role": "user", "content": "again"}]
    assert "instructions" not in last  # not inherited, and this turn gave none


@pytest.mark.parametrize("fault", ["http500", "drop", "stall", "failed"])
async def test_upstream_faults_fail_the_turn_and_evict_the_parent(
    fake: Any, fault_gateway: ServerProcess, fault: str
) -> None:
    client = sdk(fault_gateway.base_url)
    try:
        async with client.responses.connect() as connection:
            first = await ws_turn(connection, model="ok", input="hi", store=False)
            assert first.type == "response.completed"
            failed = await ws_turn(
                connection, model=fault, input="go", previous_response_id=first.response.id
            )
            assert failed.type == "response.failed", failed
            assert failed.response.error is not None
            retry = await ws_turn(connection, model="ok", input="go", previous_response_id=first.response.id)
            assert retry.type == "error" and retry.error.code == "previous_response_not_found"
            fresh = await ws_turn(connection, model="ok", input="start over")
            assert fresh.type == "response.completed"  # the socket and the gateway are fine
    finally:
        await client.close()


async def test_an_http_client_sees_response_failed_for_an_upstream_500(fault_gateway: ServerProcess) -> None:
    client = sdk(fault_gateway.base_url)
    try:
        stream = await client.responses.create(model="http500", input="hi", stream=True)
        events = [event async for event in stream]
    finally:
        await client.close()
    assert events[-1].type == "response.failed"
    assert "500" in events[-1].response.error.message


async def test_input_tokens_are_the_upstreams_count_or_an_estimate_when_it_has_none(
    gateway: ServerProcess, upstream: ServerProcess, fault_gateway: ServerProcess
) -> None:
    fields: dict[str, Any] = {
        "model": "sim",
        "instructions": "Be brief.",
        "input": "How many tokens is this?",
        "tools": [READ_FILE],
    }
    direct = openai.AsyncOpenAI(base_url=upstream.base_url, api_key=UPSTREAM_KEY, max_retries=0, timeout=20.0)
    through, faulty = sdk(gateway.base_url), sdk(fault_gateway.base_url)
    try:
        exact = await direct.responses.input_tokens.count(**fields)
        counted = await through.responses.input_tokens.count(**fields)
        estimated = await faulty.responses.input_tokens.count(**fields)  # the fake offers no /input_tokens
    finally:
        await direct.close()
        await through.close()
        await faulty.close()
    assert counted.input_tokens == exact.input_tokens
    assert estimated.input_tokens > 0 and estimated.object == "response.input_tokens"
