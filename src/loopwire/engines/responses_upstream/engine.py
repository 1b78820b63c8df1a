"""ResponsesEngine: one turn forwarded to an upstream Responses API, over its WebSocket mode or HTTP + SSE.

Owns the order of a turn (route it, send the delta or the whole history, stream, replay only before any
output, finish with a render state naming the upstream response); must not hold sockets itself (the pool
does) nor know the event or body formats (events.py, body.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from ...protocol.sse import SseDecoder, SseError
from ..base import EngineDelta, EngineRequest, Finished, RenderState, Usage
from ..common.estimate import estimate_input_tokens, estimate_output_tokens, plain_messages
from .body import build_body, count_body, encode_body, tool_json
from .client import Reads, UpgradeRefused, UpstreamClient
from .events import EventParser, UpstreamFailure
from .settings import ResponsesSettings
from .sockets import NoFreeSocket, SocketDropped, SocketLease, SocketPool

log = logging.getLogger("loopwire.engine.responses")


class UpstreamRender(RenderState):
    """The upstream response a lane's latest response corresponds to. `stored`: the upstream keeps it
    (store=true), so any connection may continue it; `lease`: the upstream socket whose connection cache
    holds it (WebSocket mode), which continues it with only the new items even when not stored."""

    __slots__ = ("lease", "response_id", "stored")

    def __init__(self, token_count: int, response_id: str, stored: bool, lease: SocketLease | None) -> None:
        super().__init__(token_count)
        self.response_id = response_id
        self.stored = stored
        self.lease = lease


@dataclass(slots=True)
class _Route:
    """How one attempt of a turn goes upstream: over a socket (this lease, or a new one) or HTTP, and as a
    continuation of `previous_id` (only the new items) or with the whole history."""

    websocket: bool
    lease: SocketLease | None
    previous_id: str | None


@dataclass(slots=True)
class ResponsesStats:
    """Counters for tests and diagnostics."""

    turns: int = 0
    ws_requests: int = 0
    http_requests: int = 0
    continuations: int = 0
    replays: int = 0
    socket_drops: int = 0
    upgrade_refusals: int = 0
    estimated_usage_turns: int = 0


class ResponsesEngine:
    """The Engine protocol in front of any server speaking the Responses API (OpenAI, xAI, another
    loopwire). A lane's continuation goes upstream as a continuation too: only the items after the cached
    prefix, with the upstream's `previous_response_id`, on the lane chain's own socket in WebSocket mode."""

    runs_hosted_tools = True
    """Every tool goes upstream as the client sent it; the upstream runs the hosted ones (or refuses)."""

    def __init__(self, settings: ResponsesSettings) -> None:
        self.settings = settings
        self.model_ids = (settings.model,) if settings.model else ()
        self.accepts_any_model = settings.model is None  # the client's model name is sent on
        self.context_window = settings.context_window or None
        self.client = UpstreamClient(settings)
        self.pool = SocketPool(settings, self.client)
        self.stats = ResponsesStats()
        self._ws_refused_until = 0.0

    async def aclose(self) -> None:
        await self.pool.aclose()
        await self.client.aclose()

    def count_tokens(self, request: EngineRequest) -> int:
        """An estimate (common/estimate.py's rule), not the upstream's count: the Engine protocol asks
        for it synchronously, and `/responses/input_tokens` is a network call."""
        messages = plain_messages(request.history, request.instructions)
        return estimate_input_tokens(messages, tool_json(request.tools))

    async def list_models(self) -> list[str]:
        """`--upstream-model` when set (every request goes to it), else what the upstream lists."""
        if self.model_ids:
            return list(self.model_ids)
        return await self.client.models() or []

    async def count_input_tokens(self, request: EngineRequest) -> int:
        """The upstream's count of the whole context (what `/input_tokens` answers), else the estimate."""
        counted = await self.client.count_input_tokens(encode_body(count_body(request, self.settings)))
        return counted if counted is not None else self.count_tokens(request)

    def _store(self, request: EngineRequest) -> bool:
        policy = self.settings.store
        return request.store if policy == "client" else policy == "always"

    def _websocket_allowed(self) -> bool:
        return self.settings.transport != "http" and time.monotonic() >= self._ws_refused_until

    def _route(self, prefix: UpstreamRender | None) -> _Route:
        stored_parent = prefix.response_id if prefix is not None and prefix.stored else None
        if not self._websocket_allowed():
            return _Route(False, None, stored_parent)
        if prefix is not None and prefix.lease is not None:
            socket = prefix.lease.socket
            if socket.open and not socket.busy and socket.latest_id == prefix.response_id:
                return _Route(True, prefix.lease, prefix.response_id)
        return _Route(True, None, stored_parent)

    async def stream(self, request: EngineRequest) -> AsyncGenerator[list[EngineDelta], None]:
        started = time.perf_counter()
        self.stats.turns += 1
        store = self._store(request)
        if not request.generate and not self._websocket_allowed():
            # a warmup over HTTP has nothing to prepare upstream; the next turn sends the whole history
            timings = {"total_ms": (time.perf_counter() - started) * 1000.0}
            yield [Finished(Usage(input_tokens=self.count_tokens(request)), "stop", None, timings)]
            return
        prefix = request.prefix if isinstance(request.prefix, UpstreamRender) else None
        stored_parent = prefix.response_id if prefix is not None and prefix.stored else None
        route = self._route(prefix)
        replayed = redialled = False
        while True:
            produced = False
            try:
                async with aclosing(self._attempt(route, request, store, started)) as batches:
                    async for batch in batches:
                        produced = True
                        yield batch
                return
            except UpgradeRefused as refused:
                self.stats.upgrade_refusals += 1
                if self.settings.transport == "auto":
                    self._ws_refused_until = time.monotonic() + self.settings.upgrade_retry_s
                log.warning("%s; this turn goes over HTTP", refused)
                route = _Route(False, None, stored_parent)
            except NoFreeSocket as full:
                log.warning("%s; this turn goes over HTTP", full)
                route = _Route(False, None, stored_parent)
            except UpstreamFailure as failure:
                if produced:
                    raise
                if failure.replay and not replayed and route.previous_id is not None:
                    replayed = True
                    self.stats.replays += 1
                    log.info("the upstream lost response %s; replaying the whole history", route.previous_id)
                    lease = route.lease if route.lease is not None and route.lease.socket.open else None
                    route = _Route(route.websocket, lease, None)
                elif isinstance(failure, SocketDropped) and not redialled:
                    redialled = True
                    self.stats.socket_drops += 1
                    log.info("%s; the turn goes again on a new socket", failure)
                    route = _Route(True, None, stored_parent)
                else:
                    raise

    async def _attempt(
        self, route: _Route, request: EngineRequest, store: bool, started: float
    ) -> AsyncGenerator[list[EngineDelta], None]:
        if route.previous_id is not None:
            items = request.history.items_from(request.prefix_items)
            self.stats.continuations += 1
        else:
            items = list(request.history)
        body = build_body(
            request,
            self.settings,
            items=items,
            previous_id=route.previous_id,
            store=store,
            websocket=route.websocket,
        )
        attempt = self._over_ws if route.websocket else self._over_http
        async with aclosing(attempt(route, encode_body(body), request, store, started)) as batches:
            async for batch in batches:
                yield batch

    async def _over_ws(
        self, route: _Route, frame: bytes, request: EngineRequest, store: bool, started: float
    ) -> AsyncGenerator[list[EngineDelta], None]:
        lease = route.lease
        if lease is None:
            lease = route.lease = await self.pool.lease()
        socket = lease.socket
        socket.busy = True
        self.stats.ws_requests += 1
        at_boundary = released = False
        try:
            await socket.send(frame)
            reads = Reads(self.settings)
            parser = EventParser()
            first_at: float | None = None
            batch: list[EngineDelta] = []
            try:
                while not parser.done:
                    batch = parser.feed(await socket.receive(reads))
                    if batch and not parser.done:
                        first_at = first_at or time.perf_counter()
                        yield batch
            except UpstreamFailure:
                at_boundary = parser.done  # a failed response or an error event ends a turn cleanly
                socket.latest_id = None
                raise
            socket.latest_id = parser.response_id
            # free before the last yield: the consumer may take its time to close this generator
            released = True
            self.pool.done(socket, reusable=True)
            render = UpstreamRender(0, parser.response_id, store, lease)
            yield [*batch, self._finished(parser, request, render, started, first_at)]
        finally:
            if not released:
                self.pool.done(socket, reusable=at_boundary)

    async def _over_http(
        self, route: _Route, body: bytes, request: EngineRequest, store: bool, started: float
    ) -> AsyncGenerator[list[EngineDelta], None]:
        self.stats.http_requests += 1
        sse = await self.client.post(body)
        try:
            decoder = SseDecoder()
            parser = EventParser()
            first_at: float | None = None
            while True:
                data = await sse.read()
                try:
                    events = decoder.feed(data) if data else decoder.close()
                except SseError as error:
                    raise UpstreamFailure(f"the upstream's stream is not SSE: {error}") from None
                batch: list[EngineDelta] = []
                for event in events:
                    if event.data != b"[DONE]":
                        batch += parser.feed(event.data)
                if parser.done:
                    break
                if not data:
                    raise UpstreamFailure("the upstream ended the stream before the response finished")
                if batch:
                    first_at = first_at or time.perf_counter()
                    yield batch
            await sse.drain()
            render = UpstreamRender(0, parser.response_id, True, None) if store else None
            yield [*batch, self._finished(parser, request, render, started, first_at)]
        finally:
            sse.close()

    def _finished(
        self,
        parser: EventParser,
        request: EngineRequest,
        render: UpstreamRender | None,
        started: float,
        first_at: float | None,
    ) -> Finished:
        usage = parser.usage
        if usage is None:
            self.stats.estimated_usage_turns += 1
            log.debug("the upstream reported no usage for this turn; it is estimated")
            usage = Usage(
                input_tokens=self.count_tokens(request),
                output_tokens=estimate_output_tokens(parser.events, parser.output_chars),
            )
        if render is not None:
            render.token_count = usage.input_tokens + usage.output_tokens
        now = time.perf_counter()
        timings = {"ttft_ms": ((first_at or now) - started) * 1000.0, "total_ms": (now - started) * 1000.0}
        return Finished(usage, parser.stop_reason, render, timings)
