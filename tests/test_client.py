"""loopwire.client against real servers on loopback: every transport, replay, reconnect, the never-twice
rule, HTTP fallback and rotation. Faults come from a real TCP proxy (tests/link_cutter.py).

What the server holds is checked from outside: for store=true the final response's input_items must be
the caller's conversation, each turn exactly once; for store=false the final turn's input_tokens must
equal those of the same conversation sent statelessly (a lost or doubled item changes the count).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import picows
import pytest
from conftest import API_KEY, ServerProcess
from link_cutter import LinkCutter

from loopwire.client import (
    RESEND_EVENT,
    Backoff,
    RequestError,
    Session,
    SessionOptions,
    TransportName,
    TurnInterrupted,
    TurnResult,
)

INSTRUCTIONS = "You are a careful coding agent. Use the tools."
TOOLS = [
    {
        "type": "function",
        "name": name,
        "description": f"{name} in the repository",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
            "additionalProperties": False,
        },
    }
    for name in ("read_file", "grep", "run_tests")
]
FAST = Backoff(base_s=0.001, max_s=0.005)


# -- servers and helpers -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """First token after 50 ms, then 100 tokens/s: a turn is still running when its first event, and
    when its first delta, arrives."""
    directory = tmp_path_factory.mktemp("slow-server")
    args = ("--sim-ttft-ms", "50", "--sim-decode-tps", "100")
    proc = ServerProcess("memory", directory / "server.log", args).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def aging_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Retires every WebSocket after one second."""
    directory = tmp_path_factory.mktemp("aging-server")
    proc = ServerProcess("memory", directory / "server.log", ("--limit", "max_connection_age_s=1")).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Accepts only API_KEY."""
    directory = tmp_path_factory.mktemp("keyed-server")
    keys = directory / "keys.txt"
    keys.write_text(API_KEY + "\n")
    proc = ServerProcess("memory", directory / "server.log", ("--api-keys", str(keys))).start()
    try:
        yield proc
    finally:
        proc.stop()


async def cutter_for(server: ServerProcess) -> LinkCutter:
    return await LinkCutter(server.port).start()


@pytest.fixture
async def cutter(server: ServerProcess) -> AsyncIterator[LinkCutter]:
    proxy = await cutter_for(server)
    try:
        yield proxy
    finally:
        await proxy.close()


class Agent:
    """The caller's side of a tool-calling loop: the whole conversation, one new tool output per turn."""

    def __init__(self, session: Session, output_bytes: int = 200) -> None:
        self.session = session
        self.output_bytes = output_bytes
        self.conversation: list[dict[str, Any]] = [
            {"type": "message", "role": "user", "content": "The test test_parse fails. Find and fix it."}
        ]
        self.sent: list[dict[str, Any]] = []  # the conversation as of the latest turn
        self.sent_log: list[list[dict[str, Any]]] = []  # ... and of every turn
        self.results: list[TurnResult] = []
        self.instructions = INSTRUCTIONS

    async def turn(self, tool_choice: str = "required") -> TurnResult:
        self.sent = list(self.conversation)
        self.sent_log.append(self.sent)
        result = await self.session.run_turn(
            self.conversation,
            model="sim",
            instructions=self.instructions,
            tools=TOOLS,
            tool_choice=tool_choice,
        )
        self.absorb(result)
        return result

    def absorb(self, result: TurnResult) -> None:
        assert result.status == "completed", result.response
        self.results.append(result)
        self.conversation += result.output
        for call in result.function_calls:
            number = len(self.results)
            output = f"turn {number}: " + "x" * self.output_bytes
            self.conversation.append(
                {"type": "function_call_output", "call_id": call["call_id"], "output": output}
            )


def shape(items: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """Items reduced to what identifies a turn (server-added ids and statuses dropped)."""
    shaped: list[tuple[str, ...]] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            content = item["content"]
            text = content if isinstance(content, str) else "".join(part.get("text", "") for part in content)
            shaped.append((kind, item["role"], text))
        elif kind == "function_call":
            shaped.append((kind, item["call_id"], item["name"], item["arguments"]))
        elif kind == "function_call_output":
            shaped.append((kind, item["call_id"], item["output"]))
        else:
            shaped.append((kind,))
    return shaped


async def stored_context(base_url: str, response_id: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        url = f"{base_url}/responses/{response_id}/input_items"
        async with http.get(url, params={"order": "asc", "limit": "100"}) as reply:
            assert reply.status == 200, await reply.text()
            page = await reply.json()
    assert not page["has_more"]
    data: list[dict[str, Any]] = page["data"]
    return data


async def assert_server_holds(agent: Agent, base_url: str) -> None:
    """The server's context for the last response is the caller's conversation: none lost, none twice."""
    last = agent.results[-1]
    if agent.session.store:
        assert shape(await stored_context(base_url, last.id)) == shape(agent.sent)
        return
    async with Session(base_url, "http-full", api_key=API_KEY) as stateless:
        fresh = await stateless.run_turn(
            agent.sent, model="sim", instructions=agent.instructions, tools=TOOLS, tool_choice="required"
        )
    assert last.response["usage"]["input_tokens"] == fresh.response["usage"]["input_tokens"]
    assert shape(last.output) == shape(fresh.output)  # the sim's output is a function of the context


async def poll(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def options(**overrides: Any) -> SessionOptions:
    return SessionOptions(**{"backoff": FAST, **overrides})


# -- every transport -----------------------------------------------------------------------------------------

CASES: list[tuple[TransportName, bool | None]] = [
    ("ws", True),
    ("ws", False),
    ("http-chained", None),
    ("http-full", None),
]


@pytest.mark.parametrize(
    ("transport", "store"), CASES, ids=["ws", "ws-store-false", "http-chained", "http-full"]
)
async def test_every_transport_completes_a_tool_calling_conversation(
    base_url: str, transport: TransportName, store: bool | None
) -> None:
    async with Session(base_url, transport, api_key=API_KEY, store=store) as session:
        agent = Agent(session)
        for _ in range(5):
            result = await agent.turn()
            assert len(result.function_calls) == 1
            assert result.metrics.transport == transport
            assert result.ttft_s is not None and 0 < result.ttft_s <= result.latency_s
            assert result.bytes_down > 0 and result.metrics.attempts == 1
        await assert_server_holds(agent, base_url)
        final = await agent.turn(tool_choice="auto")  # text when no call is required
        assert final.output_text and not final.function_calls
    chained = transport != "http-full"
    assert [r.metrics.sent_delta for r in agent.results] == [False, *[chained] * 4, False]
    for index in range(1, 5):
        result = agent.results[index]
        assert result.response["previous_response_id"] == (agent.results[index - 1].id if chained else None)
        assert result.metrics.input_items_sent == (1 if chained else len(agent.sent_log[index]))


@pytest.mark.parametrize("transport", ["ws", "http-chained", "http-full"])
async def test_bytes_up_stay_flat_when_chained_and_grow_when_stateless(
    base_url: str, transport: TransportName
) -> None:
    async with Session(base_url, transport, api_key=API_KEY) as session:
        agent = Agent(session, output_bytes=3000)
        for _ in range(8):
            await agent.turn()
    ups = [r.bytes_up for r in agent.results[1:]]
    if transport == "http-full":
        assert all(later > earlier + 3000 for earlier, later in itertools.pairwise(ups))
    else:
        assert max(ups) - min(ups) < 50, ups  # only the digits of the turn number vary
        assert max(ups) < 3000 + 1000


async def test_a_changed_instruction_sends_everything_without_an_id(base_url: str) -> None:
    async with Session(base_url, "ws", api_key=API_KEY, store=False) as session:
        agent = Agent(session)
        await agent.turn()
        await agent.turn()
        agent.instructions = INSTRUCTIONS + " Prefer small patches."
        changed = await agent.turn()
        again = await agent.turn()
    assert agent.results[1].metrics.sent_delta
    assert not changed.metrics.sent_delta and changed.response["previous_response_id"] is None
    assert changed.metrics.input_items_sent == len(agent.sent_log[2])
    assert again.metrics.sent_delta and again.response["previous_response_id"] == changed.id


async def test_stream_yields_every_event_in_order_and_the_result(base_url: str) -> None:
    async with Session(base_url, "ws", api_key=API_KEY, stream_id="lane-7") as session:
        conversation = [{"type": "message", "role": "user", "content": "hello"}]
        async with session.stream(conversation, model="sim") as turn:
            events = [event async for event in turn]
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert all(e.get("stream_id") == "lane-7" for e in events)
    assert turn.result.id == events[-1]["response"]["id"] and turn.result.output_text


async def test_a_bad_stream_id_is_a_request_error(base_url: str) -> None:
    async with Session(base_url, "ws", api_key=API_KEY, stream_id="not a lane!") as session:
        with pytest.raises(RequestError) as caught:
            await session.run_turn([{"type": "message", "role": "user", "content": "hi"}], model="sim")
    assert caught.value.code == "invalid_stream_id"


async def test_the_api_key_goes_on_http_and_on_the_upgrade(base_url: str) -> None:
    conversation = [{"type": "message", "role": "user", "content": "whose is this?"}]
    for transport in ("ws", "http-chained"):
        async with Session(base_url, transport, api_key="sk-client-owner") as session:
            result = await session.run_turn(conversation, model="sim")
        for key, status in (("sk-client-owner", 200), (API_KEY, 404)):  # open mode: each token owns its own
            headers = {"Authorization": f"Bearer {key}"}
            async with (
                aiohttp.ClientSession(headers=headers) as http,
                http.get(f"{base_url}/responses/{result.id}") as reply,
            ):
                assert reply.status == status, (transport, key)


@pytest.mark.parametrize("transport", ["ws", "http-chained"])
async def test_a_bad_key_is_refused_and_not_mistaken_for_a_transport_failure(
    keyed_server: ServerProcess, transport: TransportName
) -> None:
    conversation = [{"type": "message", "role": "user", "content": "hi"}]
    async with Session(keyed_server.base_url, transport, api_key=API_KEY) as session:
        assert (await session.run_turn(conversation, model="sim")).status == "completed"
    async with Session(keyed_server.base_url, transport, api_key="sk-wrong", options=options()) as session:
        with pytest.raises(RequestError) as caught:
            await session.run_turn(conversation, model="sim")
        assert session.socket_allowed is (transport == "ws")  # no fallback to HTTP for a bad key
    assert caught.value.status == 401 and caught.value.code == "invalid_api_key"


# -- replay on previous_response_not_found -------------------------------------------------------------------


async def test_a_store_false_chain_continued_elsewhere_is_replayed_in_full_once(base_url: str) -> None:
    async with Session(base_url, "ws", api_key=API_KEY, store=False) as first:
        agent = Agent(first)
        await agent.turn()
        await agent.turn()
        handoff = first.last_response
    async with Session(base_url, "ws", api_key=API_KEY, store=False, resume=handoff) as second:
        agent.session = second
        replayed = await agent.turn()
        after = await agent.turn()
        await assert_server_holds(agent, base_url)
    assert replayed.metrics.replayed and replayed.metrics.attempts == 2
    assert not replayed.metrics.sent_delta and replayed.response["previous_response_id"] is None
    assert replayed.metrics.input_items_sent == len(agent.sent_log[2])
    assert after.metrics.sent_delta and not after.metrics.replayed and after.metrics.attempts == 1


async def test_a_deleted_parent_over_http_chained_is_replayed(base_url: str) -> None:
    async with Session(base_url, "http-chained", api_key=API_KEY) as session:
        agent = Agent(session)
        first = await agent.turn()
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.delete(f"{base_url}/responses/{first.id}") as reply,
        ):
            assert reply.status == 200
        second = await agent.turn()
        await assert_server_holds(agent, base_url)
    assert second.metrics.replayed and second.metrics.attempts == 2 and not second.metrics.sent_delta


async def test_other_refusals_are_raised_without_a_replay(base_url: str) -> None:
    async with Session(base_url, "ws", api_key=API_KEY) as session:
        agent = Agent(session)
        await agent.turn()
        too_much = {"metadata": {f"k{i}": "v" for i in range(17)}}
        turn = session.stream(
            [*agent.conversation, {"type": "message", "role": "user", "content": "x"}],
            model="sim",
            extra=too_much,
        )
        with pytest.raises(RequestError) as caught:
            async for _ in turn:
                pass
        assert caught.value.status == 400 and turn.metrics.attempts == 1 and not turn.metrics.replayed
        assert session.last_response is None  # a failed continuation costs the server its parent
        await agent.turn()  # the session recovers with the full input
    assert not agent.results[-1].metrics.sent_delta


# -- dropped sockets -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("store", [True, False], ids=["store", "no-store"])
async def test_reconnects_after_the_link_is_cut_between_turns(
    server: ServerProcess, cutter: LinkCutter, store: bool
) -> None:
    async with Session(
        server.base_url, "ws", api_key=API_KEY, store=store, ws_url=cutter.url, options=options()
    ) as session:
        agent = Agent(session)
        await agent.turn()
        await agent.turn()
        cutter.cut()
        await poll(lambda: not session.connected)
        resumed = await agent.turn()
        after = await agent.turn()
        await assert_server_holds(agent, server.base_url)
    assert resumed.metrics.reconnects == 1 and resumed.metrics.resends == 0
    assert resumed.metrics.attempts == 1 and not resumed.metrics.replayed
    assert resumed.metrics.sent_delta is store  # a stored parent survives the socket; a cached one does not
    assert after.metrics.sent_delta and after.metrics.reconnects == 0
    assert cutter.connections == 2


async def test_reconnects_after_the_server_retires_the_socket(aging_server: ServerProcess) -> None:
    async with Session(aging_server.base_url, "ws", api_key=API_KEY, options=options()) as session:
        agent = Agent(session)
        await agent.turn()
        await poll(lambda: not session.connected)  # the server's 1 s age limit
        resumed = await agent.turn()
        await assert_server_holds(agent, aging_server.base_url)
    assert resumed.metrics.reconnects == 1 and resumed.metrics.sent_delta and resumed.metrics.resends == 0


@pytest.mark.parametrize(
    ("fault", "store"),
    [("request-lost", True), ("request-lost", False), ("reply-lost", True), ("reply-lost", False)],
)
async def test_a_drop_before_any_output_resends_and_loses_nothing(
    server: ServerProcess, cutter: LinkCutter, fault: str, store: bool
) -> None:
    async with Session(
        server.base_url, "ws", api_key=API_KEY, store=store, ws_url=cutter.url, options=options()
    ) as session:
        agent = Agent(session)
        await agent.turn()
        await agent.turn()
        if fault == "request-lost":
            cutter.cut_on_next_request()  # the server never sees the frame
        else:
            cutter.swallow_next_reply()  # the server runs it, the client sees nothing
        resent = await agent.turn()
        after = await agent.turn()
        await assert_server_holds(agent, server.base_url)
    assert resent.metrics.resends == 1 and resent.metrics.attempts == 2 and resent.metrics.reconnects == 1
    assert resent.metrics.sent_delta is store and after.metrics.sent_delta
    assert cutter.connections == 2


@pytest.mark.parametrize("transport", ["ws", "http-chained"])
async def test_a_drop_after_output_fails_the_turn_instead_of_sending_it_twice(
    slow_server: ServerProcess, transport: TransportName
) -> None:
    cutter = await cutter_for(slow_server)
    base = f"http://127.0.0.1:{cutter.port}/v1" if transport != "ws" else slow_server.base_url
    try:
        async with Session(base, transport, api_key=API_KEY, ws_url=cutter.url, options=options()) as session:
            agent = Agent(session)
            first = await agent.turn()
            connections = cutter.connections
            seen: list[str] = []
            turn = session.stream(
                agent.conversation,
                model="sim",
                instructions=INSTRUCTIONS,
                tools=TOOLS,
                tool_choice="required",
            )
            with pytest.raises(TurnInterrupted) as caught:
                async for event in turn:
                    seen.append(event["type"])
                    if event["type"].endswith(".delta"):
                        cutter.cut()
            assert caught.value.response_id is not None and caught.value.transport == transport
            assert "response.output_item.added" in seen and RESEND_EVENT not in seen
            assert turn.metrics.attempts == 1 and turn.metrics.resends == 0
            assert cutter.connections == connections  # nothing was sent again
            assert session.last_response is not None and session.last_response.response_id == first.id
            retried = await agent.turn()  # the caller decides to run the turn again
            await assert_server_holds(agent, slow_server.base_url)
        assert retried.metrics.sent_delta and retried.response["previous_response_id"] == first.id
    finally:
        await cutter.close()


async def test_a_drop_after_the_response_was_announced_but_before_output_resends_it(
    slow_server: ServerProcess,
) -> None:
    cutter = await cutter_for(slow_server)
    try:
        async with Session(
            slow_server.base_url, "ws", api_key=API_KEY, ws_url=cutter.url, options=options()
        ) as session:
            agent = Agent(session)
            await agent.turn()
            agent.sent = list(agent.conversation)
            seen: list[str] = []
            async with session.stream(
                agent.conversation,
                model="sim",
                instructions=INSTRUCTIONS,
                tools=TOOLS,
                tool_choice="required",
            ) as turn:
                async for event in turn:
                    seen.append(event["type"])
                    if event["type"] == "response.created" and cutter.connections == 1:
                        cutter.cut()  # announced, not yet produced anything
            agent.absorb(turn.result)
            await assert_server_holds(agent, slow_server.base_url)
    finally:
        await cutter.close()
    resend = seen.index(RESEND_EVENT)
    assert seen[0] == "response.created" and set(seen[:resend]) <= {
        "response.created",
        "response.in_progress",
    }
    assert seen[resend + 1] == "response.created"
    assert seen.count("response.completed") == 1 and seen[-1] == "response.completed"
    assert turn.metrics.resends == 1 and turn.metrics.reconnects == 1 and turn.metrics.sent_delta
    assert cutter.connections == 2


async def test_a_turn_abandoned_half_way_leaks_no_event_into_the_next(slow_server: ServerProcess) -> None:
    async with Session(slow_server.base_url, "ws", api_key=API_KEY, options=options()) as session:
        agent = Agent(session)
        await agent.turn()
        turn = session.stream(
            agent.conversation, model="sim", instructions=INSTRUCTIONS, tools=TOOLS, tool_choice="required"
        )
        async for event in turn:
            if event["type"] == "response.output_item.added":
                break  # the caller walks away without closing the stream
        result = await agent.turn()  # the next turn cancels the abandoned one first
        await assert_server_holds(agent, slow_server.base_url)
    assert turn.done and result.metrics.reconnects == 1 and result.metrics.sent_delta


class RetiringSocket(picows.WSListener):
    """A WebSocket peer that answers every request with the age-limit error and closes, as loopwire does
    for a frame that arrives after its socket's age limit: the request was refused, never run."""

    refusals = 0

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type == picows.WSMsgType.TEXT:
            RetiringSocket.refusals += 1
            error = b'{"type":"error","status":400,"error":{"type":"invalid_request_error",'
            error += b'"code":"websocket_connection_limit_reached","message":"too old","param":null}}'
            transport.send(picows.WSMsgType.TEXT, error)
            transport.send_close(picows.WSCloseCode.OK)
            transport.disconnect()


async def test_a_request_refused_by_a_retiring_socket_is_resent_and_the_retries_are_bounded(
    server: ServerProcess,
) -> None:
    fake = await picows.ws_create_server(lambda request: RetiringSocket(), "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{fake.sockets[0].getsockname()[1]}/v1/responses"
    RetiringSocket.refusals = 0
    try:
        async with Session(
            server.base_url, "ws", api_key=API_KEY, ws_url=url, options=options(max_socket_failures=3)
        ) as session:
            agent = Agent(session)
            result = await agent.turn()
            await assert_server_holds(agent, server.base_url)
    finally:
        fake.close()
        await fake.wait_closed()
    assert RetiringSocket.refusals == 3
    assert result.metrics.resends == 3 and result.metrics.attempts == 4 and result.metrics.fell_back
    assert result.metrics.transport == "http-chained"


# -- fallback and rotation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("store", [True, False], ids=["store", "no-store"])
async def test_falls_back_to_http_after_a_426_and_retries_the_socket_after_the_cooldown(
    server: ServerProcess, cutter: LinkCutter, store: bool
) -> None:
    cutter.refuse_upgrades = True
    settings = options(fallback_cooldown_s=0.3)
    async with Session(
        server.base_url, "ws", api_key=API_KEY, store=store, ws_url=cutter.url, options=settings
    ) as session:
        agent = Agent(session)
        fell = await agent.turn()
        stayed = await agent.turn()
        assert cutter.refused == 1  # no new upgrade attempt during the cool-down
        cutter.refuse_upgrades = False
        await poll(lambda: session.socket_allowed)
        back = await agent.turn()
        after = await agent.turn()
        await assert_server_holds(agent, server.base_url)
    http: TransportName = "http-chained" if store else "http-full"
    assert fell.metrics.fell_back and fell.metrics.transport == http
    assert stayed.metrics.transport == http and not stayed.metrics.fell_back
    assert stayed.metrics.sent_delta is store
    assert back.metrics.transport == "ws" and back.metrics.sent_delta is store
    assert after.metrics.transport == "ws" and after.metrics.sent_delta
    assert cutter.refused == 1 and cutter.connections == 1


async def test_falls_back_after_repeated_socket_failures(server: ServerProcess) -> None:
    closed = LinkCutter(0)
    await closed.start()
    port = closed.port
    await closed.close()  # nothing listens there any more: every connect is refused
    settings = options(max_socket_failures=3, fallback_cooldown_s=60)
    started = time.monotonic()
    async with Session(
        server.base_url, "ws", api_key=API_KEY, ws_url=f"ws://127.0.0.1:{port}/v1/responses", options=settings
    ) as session:
        agent = Agent(session)
        result = await agent.turn()
        assert not session.socket_allowed
        second = await agent.turn()
    assert result.metrics.fell_back and result.metrics.transport == "http-chained"
    assert second.metrics.transport == "http-chained" and second.metrics.sent_delta
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("store", [True, False], ids=["store", "no-store"])
async def test_rotates_the_socket_before_the_server_age_limit(
    aging_server: ServerProcess, store: bool
) -> None:
    settings = options(rotate_after_s=0.3)  # the server retires sockets at 1 s
    async with Session(
        aging_server.base_url, "ws", api_key=API_KEY, store=store, options=settings
    ) as session:
        agent = Agent(session)
        ages: list[float] = []
        for _ in range(8):
            await agent.turn()
            age = session.connection_age_s
            assert age is not None
            ages.append(age)
            await asyncio.sleep(0.15)
        await assert_server_holds(agent, aging_server.base_url)
    rotated = [r for r in agent.results if r.metrics.rotated]
    assert len(rotated) >= 2
    assert max(ages) < 0.6
    assert all(r.metrics.reconnects == 0 and r.metrics.resends == 0 for r in agent.results)
    assert all(r.metrics.sent_delta is store for r in rotated)  # a new socket has no cache
