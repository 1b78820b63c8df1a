"""WebSocket mode on /v1/responses: one JSON event per text frame, lanes run as concurrent tasks.

A thin shell over the core: it reads frames, schedules turns and writes events; no protocol rules.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from uvicorn.protocols.utils import ClientDisconnected

from ..core.connection import DEFAULT_LANE, ConnectionState, validate_stream_id
from ..core.plan import queued_response
from ..protocol import ids
from ..protocol.errors import ProtocolError, server_error
from ..protocol.events import Event, ResponseQueued, event_bytes
from ..protocol.request import UnknownClientEvent, WsCreateEvent, decode_ws_event, peek_stream_id
from .asgi_types import Receive, Scope, Send
from .coalesce import DRAIN, TEXT_FRAMES
from .metrics import WS, Counter
from .resume import NEW, requested_resume
from .runner import run_turn
from .state import ServerState

log = logging.getLogger("loopwire.ws")


AGE_CLOSE_REASON = "websocket_connection_limit_reached"


@dataclass(frozen=True, slots=True)
class Retirement:
    """Why a connection stops taking requests: the error event it sends, then its close code and reason."""

    error: ProtocolError
    code: int
    reason: str


class Job(NamedTuple):
    """A create waiting on its lane, with the time its frame arrived and, when a `response.queued`
    event announced it, the response id it was given."""

    event: WsCreateEvent
    received: float
    queued_as: str | None = None


def idle_timeout(seconds: float) -> Retirement:
    error = ProtocolError(
        408,
        f"This connection was idle for {seconds:g} seconds and is being closed; reconnect to continue.",
        code="websocket_idle_timeout",
    )
    return Retirement(error, 1000, "idle timeout")


def shutting_down() -> Retirement:
    error = ProtocolError(
        503,
        "The server is shutting down; this connection takes no new requests. Reconnect and continue from a "
        "stored response, or resend the full input.",
        type="server_error",
        code="server_shutting_down",
    )
    return Retirement(error, 1012, "server restarting")


async def send_error(send: Send, error: ProtocolError, stream_id: str | None) -> None:
    """An error event; with a stream_id it belongs to that lane's request, without one to the connection."""
    await send({"type": "websocket.send", "text": error.ws_event(stream_id).decode()})


class _SocketSink:
    """Sends a turn's events as text frames; its errors carry the lane's stream_id. With the server's
    text-frames extension a burst of events goes down as encoded bytes in one call, else one ASGI
    `websocket.send` per event."""

    __slots__ = ("_batched", "_bytes_out", "_send", "_stream_id")

    def __init__(self, send: Send, stream_id: str | None, batched: bool, bytes_out: Counter) -> None:
        self._send = send
        self._stream_id = stream_id
        self._batched = batched
        self._bytes_out = bytes_out

    async def error(self, error: ProtocolError) -> None:
        await send_error(self._send, error, self._stream_id)

    async def events(self, events: list[Event]) -> None:
        payloads = [event_bytes(event) for event in events]
        self._bytes_out.inc(WS, sum(map(len, payloads)))
        if self._batched:
            await self._send({"type": TEXT_FRAMES, "payloads": payloads})
            return
        for payload in payloads:
            await self._send({"type": "websocket.send", "text": payload.decode()})


class WebSocketConnection:
    def __init__(
        self,
        state: ServerState,
        send: Send,
        owner: str,
        *,
        batched: bool = False,
        resumed: ConnectionState[Job] | None = None,
    ) -> None:
        self.state = state
        self.send = send
        self.batched = batched
        if resumed is not None:  # reconnect grace: the lanes of a dropped socket, a new connection's age
            resumed.opened_at = time.monotonic()
            self.conn: ConnectionState[Job] = resumed
        else:
            self.conn = ConnectionState(
                state.limits, opened_at=time.monotonic(), owner=owner, account=state.budget
            )
        self.resume_token: str | None = None
        """Set when the client holds a token for this connection: an unclean drop parks its lanes."""
        self.tasks: set[asyncio.Task[None]] = set()
        self.retiring: Retirement | None = None
        self.closed = False
        self.last_activity = time.monotonic()

    async def send_error(self, error: ProtocolError, stream_id: str | None) -> None:
        await send_error(self.send, error, stream_id)

    async def on_frame(self, frame: str | bytes) -> bool:
        """Handle one client frame; False when the connection must close."""
        received = time.perf_counter()
        self.last_activity = time.monotonic()
        self.state.metrics.bytes_in.inc(WS, len(frame))
        if self.retiring is None and self.conn.check_age(time.monotonic()) is not None:
            self.retiring = self._aged()
        if self.retiring is not None:
            if not self.tasks:
                return False
            # Turns accepted before retiring still finish; retire() closes after them.
            await self.send_error(self.retiring.error, None)
            return True
        try:
            event = decode_ws_event(frame)
        except UnknownClientEvent as error:
            if error.event_type not in self.state.settings.ignored_client_events:
                await self.send_error(error, peek_stream_id(frame))
            return True
        except ProtocolError as error:
            await self.send_error(error, peek_stream_id(frame))
            return True
        lane = event.stream_id if event.stream_id is not None else DEFAULT_LANE
        try:
            await self.state.check_rate(self.conn.owner)
            if event.stream_id is not None:
                validate_stream_id(event.stream_id, self.state.limits)
            lane_busy = self.conn.is_running(lane)
            job = Job(event, received)
            ready = self.conn.submit(lane, job, len(frame))
        except ProtocolError as error:
            await self.send_error(error, event.stream_id)
            return True
        if not lane_busy and all(started is not job for _, started in ready):
            await self._announce_queued(lane, job)
        self._start(ready)
        return True

    async def _announce_queued(self, lane: str, job: Job) -> None:
        """The turn waits behind the connection's in-flight cap, not its own lane: say so with
        `response.queued` (number 0 of its events) under the id its turn will use."""
        response_id = ids.response_id()
        response = queued_response(job.event, response_id, int(time.time()))
        if response is None or not self.conn.replace_queued(lane, job, job._replace(queued_as=response_id)):
            return
        event = ResponseQueued(sequence_number=0, stream_id=job.event.stream_id, response=response)
        await _SocketSink(self.send, job.event.stream_id, self.batched, self.state.metrics.bytes_out).events(
            [event]
        )

    def _start(self, ready: list[tuple[str, Job]]) -> None:
        if self.closed:
            return
        for lane, job in ready:
            task = asyncio.create_task(self._run(lane, job.event, job.received, job.queued_as))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run(
        self, lane: str, event: WsCreateEvent, received: float | None, queued_as: str | None = None
    ) -> None:
        try:
            await run_turn(
                self.state,
                self.conn,
                lane,
                event,
                _SocketSink(self.send, event.stream_id, self.batched, self.state.metrics.bytes_out),
                websocket=True,
                generate=event.generate is not False,
                stream_id=event.stream_id,
                received=received,
                queued_as=queued_as,
            )
        except ClientDisconnected:
            log.debug("the client left during a turn on lane %r", lane)
        except Exception:
            log.exception("turn on lane %r failed unexpectedly", lane)
            self.conn.evict_after_failure(event.previous_response_id, lane)
            await self._try_send_error(server_error(), event.stream_id)
        finally:
            self.last_activity = time.monotonic()
            self._start(self.conn.finish(lane))

    async def _try_send_error(self, error: ProtocolError, stream_id: str | None) -> None:
        try:
            await self.send_error(error, stream_id)
        except Exception:  # the socket is gone; nothing left to tell
            log.debug("could not report an error to a closed socket")

    def _aged(self) -> Retirement:
        return Retirement(self.conn.age_limit_error(), 1000, AGE_CLOSE_REASON)

    async def watch(self) -> None:
        """Retire the connection at its age limit (`websocket_connection_limit_reached`), or once it has
        been idle, with no frame and no turn, for `idle_timeout_s` (`websocket_idle_timeout`)."""
        limits = self.state.limits
        age_deadline = self.conn.opened_at + limits.max_connection_age_s
        while True:
            now = time.monotonic()
            if self.tasks or self.conn.queued:
                self.last_activity = now
            idle_deadline = self.last_activity + limits.idle_timeout_s
            if now >= age_deadline:
                await self.retire(self._aged())
                return
            if now >= idle_deadline:
                await self.retire(idle_timeout(limits.idle_timeout_s))
                return
            await asyncio.sleep(min(age_deadline, idle_deadline) - now)

    async def retire(self, retirement: Retirement) -> None:
        """Stop taking requests, let running and queued turns finish, then say why and close."""
        if self.retiring is None:
            self.retiring = retirement
        while self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.say_goodbye()

    async def say_goodbye(self) -> None:
        if self.closed:
            return
        self.closed = True
        retirement = self.retiring or self._aged()
        try:
            await self.send_error(retirement.error, None)
            await self.send({"type": "websocket.close", "code": retirement.code, "reason": retirement.reason})
        except ClientDisconnected:
            log.debug("the client left before the connection was retired")

    async def close(self, *, unclean: bool = False) -> None:
        """Cancel the running turns; the lanes' caches go with the connection, or, after an unclean drop of
        a connection that gave out a resume token, are parked for the reconnect grace."""
        self.closed = True
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if unclean and self.resume_token is not None and self.retiring is None:
            self.conn.release_jobs()
            self.state.resume.park(self.resume_token, self.conn)
        else:
            self.conn.clear()


async def refuse_upgrade(send: Send, error: ProtocolError) -> None:
    """Answer the upgrade with a plain HTTP error (e.g. 401) instead of accepting it."""
    body = error.http_body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "websocket.http.response.start", "status": error.status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


async def serve_websocket(state: ServerState, scope: Scope, receive: Receive, send: Send, owner: str) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    try:
        ticket = await state.open_connection(owner)
    except ProtocolError as error:
        await refuse_upgrade(send, error)
        return
    try:
        await _serve_accepted(state, scope, receive, send, owner)
    finally:
        state.close_connection(ticket)


async def _serve_accepted(state: ServerState, scope: Scope, receive: Receive, send: Send, owner: str) -> None:
    await send({"type": "websocket.accept"})
    asked = requested_resume(scope) if state.resume.enabled else None
    resumed = state.resume.claim(asked, owner) if asked not in (None, NEW) else None
    batched = TEXT_FRAMES in scope.get("extensions", {})
    connection = WebSocketConnection(state, send, owner, batched=batched, resumed=resumed)
    if asked is not None:
        connection.resume_token = state.resume.issue()
        await send({"type": "websocket.send", "text": state.resume.event(connection.resume_token, resumed)})
    state.connections.add(connection.conn)
    unclean = False
    retirement = asyncio.create_task(connection.watch())
    draining: asyncio.Task[None] | None = None
    try:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                unclean = message.get("code", 1005) != 1000  # 1006: the link dropped without a close
                break
            if kind == DRAIN:
                draining = asyncio.create_task(connection.retire(shutting_down()))
                continue
            if kind != "websocket.receive":
                continue
            frame: Any = message.get("text")
            if frame is None:
                frame = message.get("bytes") or b""
            if not await connection.on_frame(frame):
                await connection.say_goodbye()
                break
    finally:
        retirement.cancel()
        if draining is not None:
            draining.cancel()
        state.connections.discard(connection.conn)
        await connection.close(unclean=unclean)  # its cached lanes leave the budget, or are parked
