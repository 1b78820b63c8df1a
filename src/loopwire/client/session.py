"""The session: one conversation over one transport choice, deciding per turn what to send and where.

Owns the per-turn policy (delta or full, replay, resend, reconnect, rotation, fallback) and its metrics;
the bytes on the wire belong to request.py, http.py and ws.py, the delta decision to delta.py.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from .delta import InputPlan, Item, LastResponse, full_input, plan_input
from .errors import ConnectionLost, RequestError, TurnInterrupted
from .events import (
    RETIRING_CODES,
    TERMINAL_TYPES,
    TIMING_EVENT,
    decode,
    event_type,
    is_first_token,
    is_output,
    resend_event,
    response_id_of,
)
from .http import HttpTransport
from .options import TRANSPORTS, SessionOptions, TransportName
from .request import RESERVED_FIELDS, canonical_fields, http_body, ws_frame
from .result import TurnMetrics, TurnResult
from .routing import Route, Router
from .socket import ClientSocket
from .ws import websocket_url

PREVIOUS_NOT_FOUND = "previous_response_not_found"


@dataclass(slots=True)
class _Attempt:
    """One request of a turn and what has come back for it so far."""

    route: Route
    plan: InputPlan
    output_seen: bool = False
    yielded: bool = False
    response_id: str | None = None
    terminal: bytes | None = None


class TurnStream:
    """The events of one turn, as parsed dicts, as they arrive; `result` once the terminal event is read.

    Iterate it to the end (or use `async with`): a turn abandoned half-way is cancelled by dropping its
    socket, so that no event of it can leak into the next turn."""

    def __init__(self, session: Session, conversation: list[Item], fields: bytes, chain: bytes) -> None:
        self.conversation = conversation
        self.fields = fields
        self.chain = chain
        """The fields the delta rule compares (SessionOptions.per_turn_fields left out)."""
        self.metrics = TurnMetrics()
        self._result: TurnResult | None = None
        self.active = False
        self.done = False
        self._events = session._turn(self)

    def __aiter__(self) -> TurnStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return decode(await self.next_payload())

    async def next_payload(self) -> bytes:
        """The next event's raw JSON (what `__anext__` decodes)."""
        self.active = True
        try:
            return await anext(self._events)
        except BaseException:
            self.done = True
            raise
        finally:
            self.active = False

    async def aclose(self) -> None:
        self.done = True
        await self._events.aclose()

    async def __aenter__(self) -> TurnStream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def result(self) -> TurnResult:
        if self._result is None:
            raise RuntimeError("the turn has not finished: read its events up to the terminal one")
        return self._result

    def _finish(self, result: TurnResult) -> None:
        self._result = result
        self.done = True


class Session:
    """One conversation with a loopwire (or OpenAI-compatible) Responses server.

    The caller keeps the whole conversation, a list of Responses input items, and passes it each turn;
    the session sends only what the server lacks:

    - `http-full`: HTTP + SSE, `store: false`, the whole conversation every turn (stateless).
    - `http-chained`: HTTP + SSE, `store: true`, new items + `previous_response_id` when the delta rule
      allows, the parent resolved from the server's store.
    - `ws`: WebSocket mode, new items + `previous_response_id` (from the connection's cache, or the store
      when `store: true`); `store` is the caller's choice (default true, as the API's).

    Rules: a delta is sent only under the delta rule (`plan_input`) and only when the parent can be
    resolved where the request goes (a `store: false` parent lives only on the socket that made it). On
    `previous_response_not_found` the full input is sent once more, without an id. A request is resent
    (after a reconnect with backoff) only when the link dropped before any output of it arrived; once
    output has arrived it is never sent again and the turn raises TurnInterrupted. Between turns the
    socket is replaced once older than `rotate_after_s`. After `max_socket_failures` consecutive socket
    failures, or a 426 to the upgrade, turns go over HTTP (chained when `store`, else full) until
    `fallback_cooldown_s` has passed, then the socket is tried again.

    `resume` continues from another session's `last_response`: its id is tried wherever the next request
    goes (the server answers previous_response_not_found when it cannot resolve it, and the full input
    follows). `rng` drives the backoff jitter. A turn abandoned half-way (its stream neither read to the
    end nor closed) is cancelled when the next turn starts, by dropping its socket.
    """

    def __init__(
        self,
        base_url: str,
        transport: TransportName = "ws",
        *,
        api_key: str | None = None,
        store: bool | None = None,
        stream_id: str | None = None,
        ws_url: str | None = None,
        options: SessionOptions | None = None,
        resume: LastResponse | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {transport!r}; expected one of {', '.join(TRANSPORTS)}")
        fixed = {"http-full": False, "http-chained": True}.get(transport)
        if fixed is not None and store is not None and store != fixed:
            raise ValueError(f"{transport} always uses store={str(fixed).lower()}")
        if stream_id is not None and transport != "ws":
            raise ValueError("stream_id names a lane of WebSocket mode; it needs transport='ws'")
        self.transport: TransportName = transport
        self.store: bool = fixed if fixed is not None else (True if store is None else store)
        self.stream_id = stream_id
        self.options = options or SessionOptions()
        headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
        self._http = HttpTransport(base_url, headers, self.options)
        self._rng = rng or random.Random()
        self._router = Router(
            transport,
            store=self.store,
            ws_url=ws_url or websocket_url(base_url),
            headers=headers,
            options=self.options,
            rng=self._rng,
        )
        self._last = resume
        self._holder: ClientSocket | None = None
        self._resumed = resume is not None
        self._current: TurnStream | None = None
        self._closed = False

    # -- public surface ------------------------------------------------------------------------------------

    @property
    def last_response(self) -> LastResponse | None:
        """What the next turn may continue from (pass it as `resume=` to continue on another session)."""
        return self._last

    @property
    def ws_url(self) -> str:
        return self._router.ws_url

    @property
    def connected(self) -> bool:
        conn = self._router.conn
        return conn is not None and conn.usable

    @property
    def connection_age_s(self) -> float | None:
        conn = self._router.conn
        return None if conn is None else conn.age(time.monotonic())

    @property
    def socket_allowed(self) -> bool:
        """True for a `ws` session except while it is on HTTP after a fallback."""
        return self._router.socket_allowed()

    def stream(
        self,
        conversation: Sequence[Item],
        *,
        model: str,
        instructions: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
        max_output_tokens: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> TurnStream:
        """Start a turn over `conversation` (the whole history, ending with the new items) and return its
        events. Fields left as None are not sent; `extra` adds any other create field (metadata,
        temperature, reasoning, ...). One turn at a time per session."""
        if self._closed:
            raise RuntimeError("the session is closed")
        fields: dict[str, Any] = {"model": model}
        for name, value in (
            ("instructions", instructions),
            ("tools", tools),
            ("tool_choice", tool_choice),
            ("parallel_tool_calls", parallel_tool_calls),
            ("max_output_tokens", max_output_tokens),
        ):
            if value is not None:
                fields[name] = value
        if extra:
            reserved = RESERVED_FIELDS.intersection(extra)
            if reserved:
                raise ValueError(f"the session sets {', '.join(sorted(reserved))} itself")
            fields.update(extra)
        fields["store"] = self.store
        per_turn = self.options.per_turn_fields
        chain = {name: value for name, value in fields.items() if name not in per_turn}
        return TurnStream(self, list(conversation), canonical_fields(fields), canonical_fields(chain))

    async def run_turn(
        self,
        conversation: Sequence[Item],
        *,
        model: str,
        instructions: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
        max_output_tokens: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> TurnResult:
        """`stream(...)` read to its end, without decoding the events on the way: the final result."""
        turn = self.stream(
            conversation,
            model=model,
            instructions=instructions,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            max_output_tokens=max_output_tokens,
            extra=extra,
        )
        try:
            while True:
                await turn.next_payload()
        except StopAsyncIteration:
            return turn.result

    async def aclose(self) -> None:
        self._closed = True
        current = self._current
        if current is not None and not current.done and not current.active:
            await current.aclose()
        await self._router.close()
        await self._http.close()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- one turn ------------------------------------------------------------------------------------------

    async def _claim(self, turn: TurnStream) -> None:
        current = self._current
        if current is not None and current is not turn and not current.done:
            if current.active:
                raise RuntimeError("a turn is already running on this session; one turn at a time")
            await current.aclose()  # abandoned half-way: cancel it before this one starts
        self._current = turn

    async def _turn(self, turn: TurnStream) -> AsyncGenerator[bytes, None]:
        """The policy loop: route, plan, send; replay once on previous_response_not_found; resend after a
        drop only while no output has arrived; commit the terminal event."""
        await self._claim(turn)
        metrics = turn.metrics
        started = time.perf_counter()
        force_full = False
        http_failures = 0
        in_flight: ClientSocket | None = None  # a socket whose request has not reached its terminal event
        try:
            while True:
                if self._closed:
                    raise RuntimeError("the session was closed during the turn")
                route = await self._router.route(metrics)
                plan = full_input(turn.conversation) if force_full else self._plan(route, turn)
                attempt = _Attempt(route, plan)
                in_flight = route.conn
                try:
                    async with aclosing(self._send(attempt, turn, started)) as events:
                        async for payload in events:
                            yield payload
                    in_flight = None
                except RequestError as error:
                    in_flight = None  # the error event ended the request; the socket is clean
                    self._last = None  # a failed continuation costs the server its parent
                    replayable = plan.delta and not metrics.replayed and not attempt.output_seen
                    if error.code == PREVIOUS_NOT_FOUND and replayable:
                        metrics.replayed = force_full = True
                        continue
                    raise
                except ConnectionLost as lost:
                    in_flight = None
                    self._router.lost(route, metrics)
                    if attempt.output_seen:
                        raise TurnInterrupted(
                            f"the {route.name} link dropped after output of response {attempt.response_id} "
                            "had arrived; the request is not resent (it could run the turn twice)",
                            response_id=attempt.response_id,
                            transport=route.name,
                        ) from lost
                    if route.conn is None:
                        http_failures += 1
                        if http_failures > self.options.http_retries:
                            raise
                        await asyncio.sleep(self.options.backoff.delay(http_failures, self._rng))
                    metrics.resends += 1
                    if attempt.yielded:
                        yield resend_event(metrics.attempts + 1, str(lost))
                    continue
                assert attempt.terminal is not None
                self._commit(turn, attempt, started)
                yield attempt.terminal
                return
        finally:
            if in_flight is not None:  # abandoned or cancelled mid-turn: no event of it may reach the next
                self._router.drop(in_flight)

    async def _send(self, attempt: _Attempt, turn: TurnStream, started: float) -> AsyncGenerator[bytes, None]:
        """One request: yields its events up to the terminal one (kept in `attempt.terminal`). Raises
        RequestError when refused, ConnectionLost when the link fails or a retiring socket refuses it."""
        route, plan, metrics = attempt.route, attempt.plan, turn.metrics
        if route.conn is not None:
            body, channel = ws_frame(turn.fields, plan, self.stream_id), route.conn.exchange
        else:
            body, channel = http_body(turn.fields, plan), self._http.exchange
        metrics.attempts += 1
        async with aclosing(channel(body, metrics)) as payloads:
            async for payload in payloads:
                kind = event_type(payload)
                if kind in TERMINAL_TYPES:
                    attempt.terminal = payload
                    return
                if kind == "error":
                    error = RequestError.from_event(decode(payload))
                    if route.conn is None or error.code not in RETIRING_CODES:
                        raise error
                    route.conn.mark_retiring()
                    if not attempt.output_seen:  # refused, never run: like a drop before any output
                        raise ConnectionLost("the server retired the socket: " + error.message)
                    continue  # the server finishes a running turn before it closes the socket
                if kind == TIMING_EVENT:
                    metrics.server_timings = _timings_of(payload)
                if not attempt.output_seen and is_output(kind):
                    attempt.output_seen = True
                if metrics.ttft_s is None and is_first_token(kind):
                    metrics.ttft_s = time.perf_counter() - started
                if attempt.response_id is None:
                    attempt.response_id = response_id_of(payload)
                attempt.yielded = True
                yield payload
        raise ConnectionLost("the stream ended before the turn's terminal event")

    def _plan(self, route: Route, turn: TurnStream) -> InputPlan:
        last = self._last
        if last is None or route.name == "http-full":
            return full_input(turn.conversation)
        conn = route.conn
        same_lanes = conn is not None and (conn is self._holder or conn.resumed_from is self._holder)
        reachable = last.stored or self._resumed or same_lanes
        return plan_input(last if reachable else None, turn.chain, turn.conversation)

    def _commit(self, turn: TurnStream, attempt: _Attempt, started: float) -> None:
        assert attempt.terminal is not None
        route, plan, terminal = attempt.route, attempt.plan, attempt.terminal
        metrics = turn.metrics
        metrics.latency_s = time.perf_counter() - started
        metrics.transport = route.name
        metrics.sent_delta = plan.delta
        metrics.input_items_sent = len(plan.input)
        event = decode(terminal)
        response = event.get("response")
        if not isinstance(response, dict):
            raise RequestError(500, {"message": "terminal event without a response", "code": None})
        output = response.get("output")
        if response.get("status") in ("completed", "incomplete") and isinstance(output, list):
            self._last = LastResponse(
                str(response["id"]), turn.chain, turn.conversation + output, stored=self.store
            )
            self._holder = route.conn
            if route.conn is not None:
                route.conn.resumed_from = None  # the holder now: no chain of dropped sockets is kept
            self._resumed = False
        else:
            self._last = None  # a failed response is no parent, and the server evicted the one before it
        self._router.served(route)
        turn._finish(TurnResult(response, metrics))


def _timings_of(payload: bytes) -> dict[str, float]:
    timings = decode(payload).get("timings")
    if not isinstance(timings, dict):
        return {}
    return {str(name): float(value) for name, value in timings.items() if isinstance(value, int | float)}
