"""The RenderState contract (engines/base.py), in process: `server.runner.run_turn` driven with a small
engine written here (a real implementation of the Engine protocol) and a recording EventSink. Every way a
cached response leaves a connection's cache (replaced, failure, budget, connection close, store failure
after commit) updates the CacheBudget at once, and the engine's render state is finalized exactly when the
core drops its last reference.
"""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from loopwire.core.connection import ConnectionState
from loopwire.core.limits import Limits
from loopwire.engines.base import (
    EngineDelta,
    EngineError,
    EngineRequest,
    Finished,
    RenderState,
    TextDelta,
    Usage,
)
from loopwire.protocol.errors import ProtocolError
from loopwire.protocol.events import Event, encode
from loopwire.protocol.items import Message, text_of
from loopwire.protocol.request import decode_ws_event
from loopwire.server.runner import BUDGET, FAILURE, run_turn
from loopwire.server.state import ServerState
from loopwire.store.memory import MemoryStore


class CountedRender(RenderState):
    """A render state with a resource hung on it: its finalizer records the turn it belongs to."""

    __slots__ = ("__weakref__", "label")

    def __init__(self, token_count: int, label: str, released: list[str]) -> None:
        super().__init__(token_count)
        self.label = label
        weakref.finalize(self, released.append, label)


class EchoEngine:
    """Answers with the last user message reversed; "fail" makes the turn fail mid-stream. Each turn's
    render state is labelled with that message."""

    name = "echo"

    def __init__(self) -> None:
        self.released: list[str] = []
        self.prefixes: list[str | None] = []

    async def stream(self, request: EngineRequest) -> AsyncGenerator[list[EngineDelta], None]:
        prefix = request.prefix
        self.prefixes.append(prefix.label if isinstance(prefix, CountedRender) else None)
        last = next(request.history.reversed_segments())[-1]
        said = text_of(last.content) if isinstance(last, Message) else ""
        yield [TextDelta(said[::-1])]
        if said == "fail":
            raise EngineError("the engine gave up", code="server_error")
        render = CountedRender(request.history.length + 1, said, self.released)
        yield [Finished(Usage(input_tokens=request.history.length, output_tokens=1), render=render)]

    def count_tokens(self, request: EngineRequest) -> int:
        return request.history.length

    async def aclose(self) -> None:
        return None


class RecordingSink:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.errors: list[tuple[str | None, str | None]] = []

    async def error(self, error: ProtocolError) -> None:
        self.errors.append((error.code, error.param))  # not the error: its traceback holds the parent

    async def events(self, events: list[Event]) -> None:
        self.sent.extend(json.loads(encode(event)) for event in events)


def make_state(**limits: Any) -> tuple[ServerState, EchoEngine]:
    engine = EchoEngine()
    store = MemoryStore(max_bytes=4096)  # a record past this is refused: the store failure after commit
    return ServerState(engine=engine, store=store, limits=Limits(**limits)), engine


def connection(state: ServerState) -> ConnectionState[Any]:
    """A WebSocket connection's state, as server/ws.py makes it: the budget is its account."""
    return ConnectionState(state.limits, opened_at=0.0, owner="owner", account=state.budget)


async def turn(
    state: ServerState,
    conn: ConnectionState[Any],
    text: str,
    *,
    lane: str = "",
    parent: str | None = None,
    store: bool = False,
) -> str:
    frame: dict[str, Any] = {"type": "response.create", "model": "echo", "input": text, "store": store}
    if parent is not None:
        frame["previous_response_id"] = parent
    sink = RecordingSink()
    response = await run_turn(state, conn, lane, decode_ws_event(json.dumps(frame)), sink, websocket=True)
    assert response is not None and not sink.errors
    assert sink.sent[-1]["response"]["id"] == response.id
    return response.status if response.status != "completed" else response.id


def cached_size(conn: ConnectionState[Any], response_id: str) -> int:
    cached = conn.lookup(response_id)
    assert cached is not None
    return cached.size


def released(engine: EchoEngine) -> list[str]:
    gc.collect()
    return sorted(engine.released)


async def test_success_counts_the_lane_and_replacing_it_releases_the_parent_render() -> None:
    state, engine = make_state()
    conn = connection(state)
    first = await turn(state, conn, "one")
    assert state.budget.total == cached_size(conn, first) > 0 and len(state.budget) == 1
    assert released(engine) == []  # the lane's cached response holds it
    second = await turn(state, conn, "two", parent=first)
    assert engine.prefixes == [None, "one"]  # the core handed the render state back as the prefix
    assert conn.lookup(first) is None
    assert state.budget.total == cached_size(conn, second) and len(state.budget) == 1
    assert released(engine) == ["one"]  # replaced by the lane's next response: released


async def test_a_failed_continuation_evicts_its_parent_from_the_budget_at_once() -> None:
    state, engine = make_state()
    conn = connection(state)
    first = await turn(state, conn, "one")
    assert state.budget.total > 0
    assert await turn(state, conn, "fail", parent=first) == "failed"
    assert conn.lookup(first) is None
    assert state.budget.total == 0 and len(state.budget) == 0  # not counted until a later sweep
    assert state.metrics.evictions.values.get(FAILURE) == 1
    assert released(engine) == ["one"]


async def test_a_refused_continuation_evicts_its_parent_from_the_budget() -> None:
    state, engine = make_state()
    conn = connection(state)
    first = await turn(state, conn, "one")
    frame = {
        "type": "response.create",
        "model": "echo",
        "store": False,
        "previous_response_id": first,
        "input": [{"type": "function_call_output", "call_id": "call_unknown", "output": "x"}],
    }
    sink = RecordingSink()
    assert await run_turn(state, conn, "", decode_ws_event(json.dumps(frame)), sink, websocket=True) is None
    assert sink.errors == [("invalid_function_call_output", "input[0].call_id")]
    assert state.budget.total == 0 and released(engine) == ["one"]


async def test_the_budget_evicts_an_idle_lane_and_its_render_is_released() -> None:
    state, engine = make_state()
    conn = connection(state)
    first = await turn(state, conn, "one", lane="a")
    size = cached_size(conn, first)
    state, engine = make_state(cache_budget_bytes=size + size // 2)  # room for one such lane, not two
    conn = connection(state)
    first = await turn(state, conn, "one", lane="a")
    second = await turn(state, conn, "two", lane="b")
    assert conn.lookup(first) is None and conn.lookup(second) is not None
    assert state.budget.total == cached_size(conn, second) and len(state.budget) == 1
    assert state.metrics.evictions.values.get(BUDGET) == 1
    assert released(engine) == ["one"]


async def test_closing_the_connection_empties_the_budget_and_releases_every_render() -> None:
    state, engine = make_state()
    conn = connection(state)
    for lane in ("a", "b", "c"):
        await turn(state, conn, f"lane {lane}", lane=lane)
    assert len(state.budget) == 3 and state.budget.total > 0
    conn.clear()  # what WebSocketConnection.close() does when the socket goes
    assert state.budget.total == 0 and len(state.budget) == 0
    assert released(engine) == ["lane a", "lane b", "lane c"]


async def test_a_store_failure_after_commit_evicts_the_response_it_had_committed() -> None:
    state, engine = make_state()
    conn = connection(state)
    kept = await turn(state, conn, "kept", lane="other")
    assert await turn(state, conn, "x" * 5000, store=True) == "failed"  # larger than the store takes
    assert cached_size(conn, kept) == state.budget.total and len(state.budget) == 1
    assert released(engine) == ["x" * 5000]


@pytest.mark.parametrize("outcome", ["fail", "ok"])
async def test_the_render_outlives_the_drop_while_a_running_turn_holds_it(outcome: str) -> None:
    """Release happens when the *last* reference goes, not at the drop: anything still holding the state
    (here the test, as a running turn's request holds its prefix) keeps it alive."""
    state, engine = make_state()
    conn = connection(state)
    first = await turn(state, conn, "one")
    cached = conn.lookup(first)
    assert cached is not None and isinstance(cached.render, CountedRender)
    held = cached.render
    await turn(state, conn, outcome, parent=first)
    del cached
    assert conn.lookup(first) is None  # dropped by the core (replaced, or evicted after the failure)
    assert released(engine) == []
    del held
    assert released(engine) == ["one"]
