"""Runs one turn for either transport: resolve the parent, stream the engine, commit, then announce.

Owns the order of effects (commit before the terminal event); the wire rules live in protocol/ and core/.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from typing import Any, Protocol

import msgspec

from ..core.cache import CachedResponse
from ..core.connection import ConnectionState
from ..core.plan import TurnPlan, fit_plan, plan_turn, validate_fields, window_rule
from ..core.turn import Turn
from ..engines.base import (
    EngineDelta,
    EngineError,
    Finished,
    TextDelta,
    ToolArgumentsDelta,
    context_window_of,
    runs_hosted_tools,
)
from ..protocol import ids
from ..protocol.context import EMPTY_CONTEXT
from ..protocol.errors import ProtocolError, previous_response_not_found, store_unavailable
from ..protocol.events import Event, encode
from ..protocol.items import InputItem, OutputItem, approx_size, decode_item, decode_items, encode_items
from ..protocol.request import CreateRequest
from ..protocol.response import Response
from ..store.base import StoredResponse, StoreUnavailable
from .metrics import HTTP, WS, Labels
from .state import ServerState

log = logging.getLogger("loopwire.turn")

CACHE_HIT: Labels = (("result", "cache"),)
STORE_HIT: Labels = (("result", "store"),)
NOT_FOUND: Labels = (("result", "not_found"),)
FAILURE: Labels = (("reason", "failure"),)
BUDGET: Labels = (("reason", "budget"),)
TRUNCATED: Labels = (("result", "truncated"),)
COMPACTED: Labels = (("result", "compacted"),)
OVERFLOW: Labels = (("result", "refused"),)


class TurnClock:
    """perf_counter marks of one turn, for /metrics and the opt-in `loopwire.timing` event."""

    __slots__ = ("first_output", "planned", "received", "started")

    def __init__(self, received: float | None) -> None:
        self.started = time.perf_counter()
        self.received = received if received is not None else self.started
        self.planned = self.started
        self.first_output: float | None = None

    def timings(self, engine: dict[str, float], committed: float) -> dict[str, float]:
        first = self.first_output if self.first_output is not None else committed
        return {
            "decode_ms": (self.started - self.received) * 1000.0,
            "resolve_plan_ms": (self.planned - self.started) * 1000.0,
            "ttft_ms": (first - self.received) * 1000.0,
            "total_ms": (committed - self.received) * 1000.0,
            **{f"engine_{name}": value for name, value in engine.items()},
        }


class EventSink(Protocol):
    async def error(self, error: ProtocolError) -> None:
        """The turn was refused before it started (nothing was emitted for it)."""

    async def events(self, events: list[Event]) -> None:
        """Send these events, in order (one burst: transports may write them together)."""


class _StoredOutput(msgspec.Struct):
    output: list[msgspec.Raw]


_output_decoder = msgspec.json.Decoder(_StoredOutput)


def decode_stored_items(record: StoredResponse) -> tuple[list[InputItem], list[OutputItem]]:
    outputs = [decode_item(raw) for raw in _output_decoder.decode(record.response).output]
    return decode_items(record.input_items), outputs


def _record(plan: TurnPlan, response_id: str, created_at: int, encoded: bytes) -> StoredResponse:
    """The durable record: the new items linked to a stored parent, or, when the parent was never stored
    (a store=false turn) or the context was truncated or compacted to fit the window, the whole context
    with no link, so the record alone can be continued (a compaction item rides in the output only)."""
    parent = plan.parent
    if plan.pruned:
        kept = [item for item in plan.context if item is not plan.compaction]
        return StoredResponse(response_id, plan.owner, None, created_at, encode_items(kept), encoded)
    if parent is None or parent.stored:
        link = parent.id if parent is not None else None
        return StoredResponse(
            response_id, plan.owner, link, created_at, encode_items(plan.new_items), encoded
        )
    return StoredResponse(response_id, plan.owner, None, created_at, encode_items(plan.context), encoded)


def merge_ready(batch: list[EngineDelta]) -> list[EngineDelta]:
    """Consecutive text (or argument) deltas that the engine had ready at the same moment become one
    delta: fewer, larger events with the same concatenation. Deltas that arrive apart stay apart."""
    if len(batch) < 2:
        return batch
    merged: list[EngineDelta] = []
    pieces: list[str] = []
    kind: type[TextDelta] | type[ToolArgumentsDelta] | None = None
    for delta in batch:
        if isinstance(delta, TextDelta | ToolArgumentsDelta):
            if type(delta) is not kind and kind is not None:
                merged.append(kind("".join(pieces)))
                pieces = []
            kind = type(delta)
            pieces.append(delta.text if isinstance(delta, TextDelta) else delta.delta)
            continue
        if kind is not None:
            merged.append(kind("".join(pieces)))
            pieces, kind = [], None
        merged.append(delta)
    if kind is not None:
        merged.append(kind("".join(pieces)))
    return merged


async def resolve_parent(
    state: ServerState,
    conn: ConnectionState[Any],
    lane: str,
    previous_response_id: str | None,
) -> CachedResponse | None:
    """Connection cache first, then the durable store, else previous_response_not_found."""
    if previous_response_id is None:
        return None
    cached = conn.lookup(previous_response_id)
    if cached is not None:
        state.metrics.parents.inc(CACHE_HIT)
        return cached
    try:
        chain = await state.store.chain(previous_response_id, conn.owner)
    except StoreUnavailable:
        raise store_unavailable() from None
    if chain is None:
        state.metrics.parents.inc(NOT_FOUND)
        raise previous_response_not_found(previous_response_id)
    state.metrics.parents.inc(STORE_HIT)
    context = EMPTY_CONTEXT
    size = 0
    for record in chain:
        inputs, outputs = decode_stored_items(record)
        context = context.extend(inputs).extend(outputs)
        size += approx_size(inputs) + approx_size(outputs)
    return CachedResponse(
        previous_response_id, conn.owner, lane, context, render=None, stored=True, size=size, root=chain[0].id
    )


async def _stream(
    state: ServerState, plan: TurnPlan, turn: Turn, sink: EventSink, clock: TurnClock
) -> tuple[Finished | None, list[Event], tuple[str, str] | None]:
    """Drive the engine and send its events. Returns the Finished delta with the events of its batch still
    unsent (the caller sends them with the closing events), or the failure (code, message). Engine errors
    of any kind fail the turn; a failing sink (the client left) propagates."""
    merge = state.settings.merge_ready_deltas
    limits = state.limits
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.turn_timeout_s
    async with aclosing(state.engine.stream(plan.engine_request)) as batches:
        while True:
            wait = min(limits.engine_idle_timeout_s, deadline - loop.time())
            try:
                async with asyncio.timeout(wait):
                    batch = await anext(batches)
            except TimeoutError:
                log.warning(
                    "the engine went silent; failing the turn", extra={"response_id": plan.response.id}
                )
                return None, [], ("engine_timeout", "The model did not respond in time.")
            except StopAsyncIteration:
                return None, [], ("server_error", "The engine ended the turn without finishing it.")
            except EngineError as error:
                return None, [], (error.code, str(error))
            except Exception:
                log.exception("the engine failed", extra={"response_id": plan.response.id})
                return None, [], ("server_error", "The engine failed while generating this response.")
            events: list[Event] = []
            try:
                for delta in merge_ready(batch) if merge else batch:
                    if isinstance(delta, Finished):
                        if events and clock.first_output is None:
                            clock.first_output = time.perf_counter()
                        return delta, events, None
                    events += turn.feed(delta)
            except (TypeError, ValueError) as error:
                log.error(
                    "the engine sent an invalid delta sequence: %s",
                    error,
                    extra={"response_id": plan.response.id},
                )
                return None, [], ("server_error", "The engine produced an invalid stream.")
            if events and clock.first_output is None:
                clock.first_output = time.perf_counter()
            await sink.events(events)


def _store_available(state: ServerState) -> bool:
    """False only for a store that knows its backend is down (SupportsAvailability); a getattr, because a
    runtime Protocol isinstance check costs ~14 us on every turn."""
    return bool(getattr(state.store, "available", True))


async def run_turn(
    state: ServerState,
    conn: ConnectionState[Any],
    lane: str,
    request: CreateRequest,
    sink: EventSink,
    *,
    websocket: bool,
    generate: bool = True,
    stream_id: str | None = None,
    received: float | None = None,
    queued_as: str | None = None,
) -> Response | None:
    """One turn from request to terminal event. Returns the final Response, or None when refused.
    `received` is the perf_counter time the request arrived, before it was decoded; `queued_as` the
    response id a `response.queued` event already announced (its events then continue from number 1)."""
    clock = TurnClock(received)
    transport = WS if websocket else HTTP
    metrics = state.metrics
    previous_id = request.previous_response_id
    if request.store is not False and not _store_available(state):
        # Known down (the breaker is open): refuse before the engine runs, and keep the lane's parent.
        metrics.turns.inc((*transport, ("outcome", "refused")))
        await sink.error(store_unavailable())
        return None
    try:
        validate_fields(request, state.limits, websocket=websocket)
        parent = await resolve_parent(state, conn, lane, previous_id)
        plan = plan_turn(
            request,
            parent=parent,
            lane=lane,
            owner=conn.owner,
            response_id=queued_as or ids.response_id(),
            now=int(time.time()),
            generate=generate,
            runs_hosted_tools=runs_hosted_tools(state.engine),
        )
        rule = window_rule(request, context_window_of(state.engine))
        if rule is not None:
            fit_plan(plan, rule, state.engine.count_tokens)
            if plan.pruned:
                metrics.context_fits.inc(COMPACTED if plan.compaction is not None else TRUNCATED)
    except ProtocolError as error:
        if error.code == "context_length_exceeded":
            metrics.context_fits.inc(OVERFLOW)
        if conn.evict_after_failure(previous_id, lane):
            metrics.evictions.inc(FAILURE)
        metrics.turns.inc((*transport, ("outcome", "refused")))
        await sink.error(error)
        return None

    clock.planned = time.perf_counter()
    first_sequence = 0 if queued_as is None else 1
    turn = Turn(plan.response, stream_id, include=plan.engine_request.include, first_sequence=first_sequence)
    opening = turn.opening(generate=generate)
    if plan.compaction is not None:
        opening += turn.compacted(plan.compaction)
    await sink.events(opening)
    finished, events, failure = await _stream(state, plan, turn, sink, clock)

    if failure is not None:
        response = turn.fail(*failure)
        if conn.evict_after_failure(previous_id, lane):
            metrics.evictions.inc(FAILURE)
        await _announce(state, sink, turn, encode(response), clock, {}, transport)
        return response

    assert finished is not None
    closing, response = turn.finish(finished, int(time.time()))
    events += closing
    if events:
        await sink.events(events)
    encoded = encode(response)
    # Commit before announcing: a client may continue the instant it sees the terminal event.
    model_output = [item for item in turn.output if item is not plan.compaction]
    if plan.pruned:
        size = approx_size(plan.context) + approx_size(model_output)
    else:
        parent_size = plan.parent.size if plan.parent is not None else 0
        size = parent_size + approx_size(plan.new_items) + approx_size(model_output)
    cached = CachedResponse(
        response.id,
        conn.owner,
        lane,
        plan.context.extend(model_output),
        finished.render,
        plan.store,
        size,
        plan.root,
    )
    conn.commit(cached)
    if websocket:
        evicted = state.budget.record(conn, cached)
        if evicted:
            metrics.evictions.inc(BUDGET, len(evicted))
    if plan.store:
        record = _record(plan, response.id, response.created_at, encoded)
        try:
            await state.store.put(record)
        except StoreUnavailable:
            conn.evict(response.id)  # the parent went with the commit: the lane starts afresh
            response = turn.fail("store_unavailable", "The response could not be stored.")
            encoded = encode(response)
    await _announce(state, sink, turn, encoded, clock, finished.timings, transport)
    return response


async def _announce(
    state: ServerState,
    sink: EventSink,
    turn: Turn,
    encoded: bytes,
    clock: TurnClock,
    engine_timings: dict[str, float],
    transport: Labels,
) -> None:
    """The terminal event (preceded, when enabled, by `loopwire.timing`), and the turn's metrics."""
    committed = time.perf_counter()
    metrics = state.metrics
    metrics.turns.inc((*transport, ("outcome", turn.response.status)))
    metrics.turn_seconds.observe(transport, committed - clock.received)
    if clock.first_output is not None:
        metrics.ttft_seconds.observe(transport, clock.first_output - clock.received)
    events: list[Event] = []
    if state.settings.timing_events:
        events.append(turn.timing(clock.timings(engine_timings, committed)))
    events.append(turn.terminal(encoded))
    await sink.events(events)
