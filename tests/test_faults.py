"""Faults on a real server on loopback driven by the official SDK. Engine failures mid-turn end the turn
with response.failed, evict the parent it continued, and leave the connection and server working. A store
outage gives 503-shaped errors to what needs the store, while store=false WebSocket turns keep working: with a
store that fails every call, and with a real redis-server that hangs or stops and comes back."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path

import openai
import pytest
import uvicorn
from conftest import ServerProcess, make_async_client
from openai.types.responses import ResponseFailedEvent
from redis_server import RedisServer

from loopwire.core.limits import Limits
from loopwire.engines.base import EngineDelta, EngineError, EngineRequest, TextDelta
from loopwire.engines.sim.engine import SimEngine
from loopwire.protocol.items import Message, text_of
from loopwire.server.app import LoopwireApp
from loopwire.server.coalesce import CoalescingHttpToolsProtocol, CoalescingWebSocketProtocol
from loopwire.server.state import ServerState
from loopwire.store.base import StoredResponse, StoreUnavailable
from loopwire.store.memory import MemoryStore


class FaultyEngine:
    """The sim engine, except for what the last user message says: FAIL or CRASH break the stream after one
    delta, HANG goes silent after one, DRIP sends a delta every 50 ms forever. It counts the streams it
    started and the ones that were closed, so tests can see that nothing is left running."""

    name = "faulty"

    def __init__(self) -> None:
        self.inner = SimEngine()
        self.started = 0
        self.closed = 0

    async def stream(self, request: EngineRequest) -> AsyncGenerator[list[EngineDelta], None]:
        self.started += 1
        try:
            last = list(request.history)[-1]
            said = text_of(last.content) if isinstance(last, Message) else ""
            if any(word in said for word in ("FAIL", "CRASH", "HANG", "DRIP")):
                yield [TextDelta("partial")]
                if "FAIL" in said:
                    raise EngineError("the model backend went away", code="upstream_error")
                if "CRASH" in said:
                    raise RuntimeError("a bug in the engine")
                while True:
                    await asyncio.sleep(3600 if "HANG" in said else 0.05)
                    yield [TextDelta(" more")]
            async for batch in self.inner.stream(request):
                yield batch
        finally:
            self.closed += 1

    def count_tokens(self, request: EngineRequest) -> int:
        return self.inner.count_tokens(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class DownStore(MemoryStore):
    """A store whose backend is unreachable: every call fails the way a real outage surfaces."""

    async def put(self, record: StoredResponse) -> None:
        raise StoreUnavailable("the database is down")

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        raise StoreUnavailable("the database is down")

    async def chain(self, response_id: str, owner: str) -> list[StoredResponse] | None:
        raise StoreUnavailable("the database is down")

    async def delete(self, response_id: str, owner: str) -> bool:
        raise StoreUnavailable("the database is down")


async def serve(state_factory: Callable[[], ServerState]) -> AsyncIterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def state() -> ServerState:
        return state_factory()

    config = uvicorn.Config(
        LoopwireApp(state),
        host="127.0.0.1",
        port=port,
        http=CoalescingHttpToolsProtocol,
        ws=CoalescingWebSocketProtocol,
        lifespan="on",
        log_level="error",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 -- uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    await task


TIMEOUTS = Limits(engine_idle_timeout_s=0.5, turn_timeout_s=1.5)


@pytest.fixture
def engine() -> FaultyEngine:
    return FaultyEngine()


@pytest.fixture
async def base_url(engine: FaultyEngine) -> AsyncIterator[str]:
    async for url in serve(lambda: ServerState(engine=engine, store=MemoryStore(), limits=TIMEOUTS)):
        yield url


@pytest.fixture
async def down_store_url() -> AsyncIterator[str]:
    async for url in serve(lambda: ServerState(engine=SimEngine(), store=DownStore())):
        yield url


def assert_failed_with(event: object, code: str) -> None:
    """response.failed in the SDK's own vocabulary: our specific code rides in the message when the SDK's
    list of error codes has no such code."""
    validated = ResponseFailedEvent.model_validate(event.model_dump(mode="json"))  # type: ignore[attr-defined]
    error = validated.response.error
    assert error is not None
    if code == "server_error":
        assert error.code == "server_error"
    else:
        assert error.code == "server_error" and f"[{code}]" in error.message


async def turn(
    connection: openai.resources.responses.AsyncResponsesConnection, **fields: object
) -> list[object]:
    await connection.response.create(model="sim", store=False, **fields)  # type: ignore[arg-type]
    events: list[object] = []
    async for event in connection:
        events.append(event)
        if event.type in ("response.completed", "response.failed", "error"):
            return events
    raise AssertionError("the connection closed mid-turn")


@pytest.mark.parametrize(("word", "code"), [("FAIL", "upstream_error"), ("CRASH", "server_error")])
async def test_engine_failure_fails_the_turn_and_evicts_its_parent(
    base_url: str, word: str, code: str
) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0)
    async with client.responses.connect() as connection:
        first = (await turn(connection, input="hello"))[-1]
        assert first.type == "response.completed"  # type: ignore[attr-defined]
        parent_id = first.response.id  # type: ignore[attr-defined]

        events = await turn(connection, input=f"please {word} now", previous_response_id=parent_id)
        failed = events[-1]
        assert failed.type == "response.failed"  # type: ignore[attr-defined]
        assert failed.response.status == "failed"  # type: ignore[attr-defined]
        assert_failed_with(failed, code)
        numbers = [event.sequence_number for event in events]  # type: ignore[attr-defined]
        assert numbers == list(range(len(numbers)))

        retry = (await turn(connection, input="again", previous_response_id=parent_id))[-1]
        assert retry.type == "error"  # type: ignore[attr-defined]
        assert retry.error.code == "previous_response_not_found"  # type: ignore[attr-defined]

        fresh = (await turn(connection, input="a fresh start"))[-1]
        assert fresh.type == "response.completed"  # type: ignore[attr-defined]
    http = await client.responses.create(model="sim", input="the server is still fine")
    assert http.status == "completed"
    await client.close()


async def test_engine_failure_over_http_streams_response_failed(base_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0)
    stream = await client.responses.create(model="sim", input="CRASH please", stream=True)
    types = [event.type async for event in stream]
    assert types[0] == "response.created" and types[-1] == "response.failed"
    failed = await client.responses.create(model="sim", input="FAIL please")
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "server_error"
    assert "[upstream_error]" in failed.error.message
    await client.close()


async def test_store_outage_gives_503_and_store_false_websocket_turns_keep_working(
    down_store_url: str,
) -> None:
    client = openai.AsyncOpenAI(base_url=down_store_url, api_key="test", max_retries=0)
    with pytest.raises(openai.InternalServerError) as retrieve:
        await client.responses.retrieve("resp_anything")
    assert retrieve.value.status_code == 503
    assert retrieve.value.code == "store_unavailable"
    async with client.responses.connect() as connection:
        first = (await turn(connection, input="no store needed"))[-1]
        assert first.type == "response.completed"  # type: ignore[attr-defined]
        second = (await turn(connection, input="still fine", previous_response_id=first.response.id))[-1]  # type: ignore[attr-defined]
        assert second.type == "response.completed"  # type: ignore[attr-defined]
        await connection.response.create(model="sim", input="please keep this")  # store defaults to true
        events = [event async for event in _until_terminal(connection)]
        assert events[-1].type == "response.failed"  # type: ignore[attr-defined]
        assert_failed_with(events[-1], "store_unavailable")
        missing = (await turn(connection, input="from a stored id", previous_response_id="resp_unknown"))[-1]
        assert missing.type == "error" and missing.error.code == "store_unavailable"  # type: ignore[attr-defined]
        after = (await turn(connection, input="and store=false again"))[-1]
        assert after.type == "response.completed"  # type: ignore[attr-defined]
    await client.close()


async def _until_terminal(
    connection: openai.resources.responses.AsyncResponsesConnection,
) -> AsyncIterator[object]:
    async for event in connection:
        yield event
        if event.type in ("response.completed", "response.failed", "error"):
            return


@pytest.mark.parametrize(("word", "waited"), [("HANG", "engine_idle_timeout_s"), ("DRIP", "turn_timeout_s")])
async def test_a_stuck_engine_fails_the_turn_within_its_timeout(
    base_url: str, engine: FaultyEngine, word: str, waited: str
) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0)
    async with client.responses.connect() as connection:
        first = (await turn(connection, input="hello"))[-1]
        parent_id = first.response.id  # type: ignore[attr-defined]
        started = asyncio.get_running_loop().time()
        events = await asyncio.wait_for(
            turn(connection, input=f"{word} please", previous_response_id=parent_id), 10
        )
        elapsed = asyncio.get_running_loop().time() - started
        failed = events[-1]
        assert failed.type == "response.failed"  # type: ignore[attr-defined]
        assert_failed_with(failed, "engine_timeout")
        assert elapsed >= getattr(TIMEOUTS, waited)  # a lower bound only: the machine is noisy
        retry = (await turn(connection, input="again", previous_response_id=parent_id))[-1]
        assert retry.type == "error" and retry.error.code == "previous_response_not_found"  # type: ignore[attr-defined]
    await client.close()
    assert engine.closed == engine.started  # the stuck stream was closed, not left running


async def test_client_leaving_mid_turn_closes_the_engine_stream(base_url: str, engine: FaultyEngine) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0)
    async with client.responses.connect() as connection:
        await connection.response.create(model="sim", input="DRIP slowly", store=False)
        event = await connection.recv()
        assert event.type == "response.created"
    for _ in range(200):  # the server notices the close and cancels the turn
        if engine.closed == engine.started:
            break
        await asyncio.sleep(0.01)
    assert engine.started == 1 and engine.closed == 1
    http = await client.responses.create(model="sim", input="still serving")
    assert http.status == "completed"
    await client.close()


async def test_http_client_leaving_a_stream_closes_the_engine_stream(
    base_url: str, engine: FaultyEngine
) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0)
    stream = await client.responses.create(model="sim", input="DRIP over http", stream=True)
    async for event in stream:
        assert event.type == "response.created"
        break
    await stream.close()
    for _ in range(200):
        if engine.started == 1 and engine.closed == 1:
            break
        await asyncio.sleep(0.01)
    assert engine.started == 1 and engine.closed == 1
    assert (await client.responses.create(model="sim", input="next")).status == "completed"
    await client.close()


# -- a real Redis going away under a real server ----------------------------------------------------------


@pytest.mark.parametrize("how", ["hang", "stop"])
async def test_a_redis_outage_gives_503_keeps_store_false_turns_and_heals_without_a_restart(
    tmp_path: Path, how: str
) -> None:
    """SIGSTOP (a hung Redis: calls time out) or SIGTERM (a refusing one), then Redis comes back on the same
    port and data: store=true gets 503 store_unavailable meanwhile, store=false WebSocket turns never
    notice, and afterwards everything works again in the same loopwire process."""
    redis = RedisServer(tmp_path / "redis").start()
    server = ServerProcess(redis.url, tmp_path / "server.log").start()
    client = make_async_client(server.base_url)
    try:
        stored = await client.responses.create(model="sim", input="stored before the outage")
        async with client.responses.connect() as connection:
            previous = (await turn(connection, input="warm"))[-1].response.id  # type: ignore[attr-defined]
            redis.pause() if how == "hang" else redis.stop()
            started = time.monotonic()
            with pytest.raises(openai.InternalServerError) as retrieve:
                await client.responses.retrieve(stored.id)
            assert retrieve.value.status_code == 503 and retrieve.value.code == "store_unavailable"
            assert time.monotonic() - started < 6.0  # bounded by the connect and command timeouts
            for attempt in range(3):  # the breaker is open now: refused at once, the engine never runs
                started = time.monotonic()
                with pytest.raises(openai.InternalServerError) as create:
                    await client.responses.create(model="sim", input=f"store me {attempt}")
                assert create.value.status_code == 503 and create.value.code == "store_unavailable"
                assert time.monotonic() - started < 1.0
            for index in range(3):
                started = time.monotonic()
                done = (await turn(connection, input=f"no store {index}", previous_response_id=previous))[-1]
                assert done.type == "response.completed"  # type: ignore[attr-defined]
                assert time.monotonic() - started < 1.0
                previous = done.response.id  # type: ignore[attr-defined]
            await connection.response.create(model="sim", input="store over ws")
            refused = [event async for event in _until_terminal(connection)][-1]
            assert refused.type == "error" and refused.error.code == "store_unavailable"  # type: ignore[attr-defined]
            async with client.responses.connect() as another:  # a new socket is admitted (local cap)
                assert (await turn(another, input="new socket"))[-1].type == "response.completed"  # type: ignore[attr-defined]

            redis.resume() if how == "hang" else redis.start()
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert (await client.responses.retrieve(stored.id)).id == stored.id  # kept by the AOF
                    break
                except openai.InternalServerError:
                    assert time.monotonic() < deadline, "the server did not recover without a restart"
                    await asyncio.sleep(0.1)
            again = await client.responses.create(
                model="sim", input="stored again", previous_response_id=stored.id
            )
            assert again.status == "completed"
            await connection.response.create(
                model="sim", input="store over ws again", previous_response_id=again.id
            )
            done_again = [event async for event in _until_terminal(connection)][-1]
            assert done_again.type == "response.completed"  # type: ignore[attr-defined]
            follow = await client.responses.retrieve(done_again.response.id)  # type: ignore[attr-defined]
            assert follow.status == "completed"
    finally:
        await client.close()
        server.stop()
        redis.stop()
