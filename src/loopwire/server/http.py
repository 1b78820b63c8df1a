"""HTTP endpoints under /v1/responses: create (JSON or SSE), retrieve, delete, input items, compact.

A thin shell: each create runs the same turn code as WebSocket mode with an empty connection cache; store
outages surface as StoreUnavailable, which the router answers with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import Any
from urllib.parse import parse_qs

import msgspec

from ..core.bounds import check_compact
from ..core.compact import compact_context
from ..core.connection import DEFAULT_LANE, ConnectionState
from ..core.plan import plan_turn, validate_fields
from ..engines.base import UpstreamTokenCounter, accepts_any_model, served_models
from ..protocol.errors import ProtocolError, invalid_request, missing_parameter, response_not_found
from ..protocol.events import Event, encode, event_bytes, event_type, sse_frame
from ..protocol.items import as_listed
from ..protocol.request import CreateRequest, decode_compact, decode_http_create
from ..protocol.response import DeletedResponse, ItemList, Model, ModelList
from ..store.base import StoredResponse
from .asgi_types import Receive, Send
from .metrics import HTTP, Counter
from .runner import decode_stored_items, resolve_parent, run_turn
from .state import ServerState

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


async def send_json(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": (headers or []) + JSON_HEADERS})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: ProtocolError) -> None:
    headers = [(name.encode(), value.encode()) for name, value in error.headers.items()]
    if error.status < 500 and error.status not in (408, 409, 429):
        headers.append((b"x-should-retry", b"false"))
    await send_json(send, error.status, error.http_body(), headers)


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ProtocolError(
                413, f"The request body is larger than the limit of {limit} bytes.", code="request_too_large"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class _SseSink:
    """Streams events as SSE; a refusal before the first event becomes a plain HTTP error."""

    __slots__ = ("_bytes_out", "_send", "_started")

    def __init__(self, send: Send, bytes_out: Counter) -> None:
        self._send = send
        self._started = False
        self._bytes_out = bytes_out

    async def error(self, error: ProtocolError) -> None:
        await send_error(self._send, error)

    async def events(self, events: list[Event]) -> None:
        if not self._started:
            self._started = True
            await self._send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        body = b"".join([sse_frame(event_type(event), event_bytes(event)) for event in events])
        self._bytes_out.inc(HTTP, len(body))
        await self._send({"type": "http.response.body", "more_body": True, "body": body})

    async def end(self) -> None:
        if self._started:
            await self._send({"type": "http.response.body", "body": b""})


class _JsonSink:
    """Collects nothing but the outcome: the final Response is the body."""

    __slots__ = ("refusal",)

    def __init__(self) -> None:
        self.refusal: ProtocolError | None = None

    async def error(self, error: ProtocolError) -> None:
        self.refusal = error

    async def events(self, events: list[Event]) -> None:
        return None


def _connection(state: ServerState, owner: str) -> ConnectionState[Any]:
    return ConnectionState(state.limits, opened_at=time.monotonic(), owner=owner)


async def create(state: ServerState, receive: Receive, send: Send, owner: str) -> None:
    await state.check_rate(owner)
    body = await read_body(receive, state.limits.max_message_bytes)
    received = time.perf_counter()
    state.metrics.bytes_in.inc(HTTP, len(body))
    request = decode_http_create(body)
    await until_disconnect(_respond(state, request, send, owner, received), receive)


async def _respond(
    state: ServerState, request: CreateRequest, send: Send, owner: str, received: float
) -> None:
    conn = _connection(state, owner)
    if request.stream:
        sink = _SseSink(send, state.metrics.bytes_out)
        await run_turn(state, conn, DEFAULT_LANE, request, sink, websocket=False, received=received)
        await sink.end()
        return
    json_sink = _JsonSink()
    response = await run_turn(
        state, conn, DEFAULT_LANE, request, json_sink, websocket=False, received=received
    )
    if response is None:
        assert json_sink.refusal is not None
        await send_error(send, json_sink.refusal)
        return
    body = encode(response)
    state.metrics.bytes_out.inc(HTTP, len(body))
    await send_json(send, 200, body)


async def until_disconnect(work: Coroutine[Any, Any, None], receive: Receive) -> None:
    """Run `work` unless the client goes away first: then cancel it, so a turn nobody waits for does not
    keep the engine busy. The body has been read, so the next receive() only reports the disconnect."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if not task.cancelled():
        task.result()  # re-raise what the work raised


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _visible_record(state: ServerState, response_id: str, owner: str) -> StoredResponse:
    record = await state.store.get(response_id, owner)
    if record is None:
        raise response_not_found(response_id)
    return record


async def retrieve(state: ServerState, send: Send, response_id: str, owner: str) -> None:
    record = await _visible_record(state, response_id, owner)
    await send_json(send, 200, record.response)


async def delete(state: ServerState, send: Send, response_id: str, owner: str) -> None:
    if not await state.store.delete(response_id, owner):
        raise response_not_found(response_id)
    await send_json(send, 200, encode(DeletedResponse(id=response_id)))


async def input_items(state: ServerState, send: Send, response_id: str, owner: str, query: bytes) -> None:
    params = parse_qs(query.decode("latin-1"))
    order = params.get("order", ["desc"])[0]
    if order not in ("asc", "desc"):
        raise invalid_request("'order' must be 'asc' or 'desc'.", param="order")
    try:
        limit = int(params.get("limit", ["20"])[0])
    except ValueError:
        raise invalid_request("'limit' must be an integer.", param="limit") from None
    if not 1 <= limit <= 100:
        raise invalid_request("'limit' must be between 1 and 100.", param="limit")
    after = params.get("after", [None])[0]
    chain = await state.store.chain(response_id, owner)
    if chain is None:
        raise response_not_found(response_id)
    items: list[Any] = []
    for index, record in enumerate(chain):
        inputs, outputs = decode_stored_items(record)
        items.extend(inputs)
        if index < len(chain) - 1:
            items.extend(outputs)
    if order == "desc":
        items.reverse()
    start = 0
    if after is not None:
        positions = [i for i, item in enumerate(items) if getattr(item, "id", None) == after]
        if not positions:
            raise invalid_request(f"No input item with id '{after}' in this response.", param="after")
        start = positions[0] + 1
    page = items[start : start + limit]
    first = getattr(page[0], "id", None) if page else None
    last = getattr(page[-1], "id", None) if page else None
    listed = [as_listed(item) for item in page]
    body = ItemList(data=listed, first_id=first, last_id=last, has_more=start + limit < len(items))
    await send_json(send, 200, encode(body))


async def compact(state: ServerState, receive: Receive, send: Send, owner: str) -> None:
    body = await read_body(receive, state.limits.max_message_bytes)
    request = decode_compact(body)
    if not request.model:
        raise missing_parameter("model")
    check_compact(request, state.limits)
    conn = _connection(state, owner)
    parent = await resolve_parent(state, conn, DEFAULT_LANE, request.previous_response_id)
    result = compact_context(request, parent, now=int(time.time()))
    await send_json(send, 200, encode(result))


async def input_tokens(state: ServerState, receive: Receive, send: Send, owner: str) -> None:
    """How many input tokens a create with this body would use, counted by the engine without running it."""
    body = await read_body(receive, state.limits.max_message_bytes)
    request = decode_http_create(body)
    validate_fields(
        msgspec.structs.replace(request, model=request.model or "-"), state.limits, websocket=False
    )
    conn = _connection(state, owner)
    parent = await resolve_parent(state, conn, DEFAULT_LANE, request.previous_response_id)
    plan = plan_turn(request, parent=parent, lane=DEFAULT_LANE, owner=owner, response_id="", now=0)
    engine = state.engine
    if isinstance(engine, UpstreamTokenCounter):
        count = await engine.count_input_tokens(plan.engine_request)
    else:
        count = engine.count_tokens(plan.engine_request)
    await send_json(send, 200, encode({"object": "response.input_tokens", "input_tokens": count}))


async def cancel(state: ServerState, send: Send, response_id: str, owner: str) -> None:
    await _visible_record(state, response_id, owner)
    raise invalid_request(
        "Only background responses can be cancelled, and this server runs none.",
        param="response_id",
        code="not_cancellable",
    )


async def models(state: ServerState, send: Send, model_id: str | None) -> None:
    """`GET /v1/models` (what the engine serves) and `GET /v1/models/{id}`."""
    created = int(state.started_at)
    names = await served_models(state.engine)
    if model_id is None:
        await send_json(
            send, 200, encode(ModelList(data=[Model(id=name, created=created) for name in names]))
        )
        return
    if model_id not in names and not accepts_any_model(state.engine):
        raise ProtocolError(
            404, f"The model '{model_id}' does not exist.", code="model_not_found", param="model"
        )
    await send_json(send, 200, encode(Model(id=model_id, created=created)))
