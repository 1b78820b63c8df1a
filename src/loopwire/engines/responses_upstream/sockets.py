"""Upstream WebSockets: one per lane chain, leased through the render state, bounded, closed when unused.

Owns opening, reusing, bounding and closing upstream sockets and one turn's timed frame reads; must not
parse events or build bodies. A chain's RenderState holds a SocketLease: while any cached response of a
client's lane refers to it, its socket stays that chain's; when the last reference goes (the client
connection closed, the lane was evicted), the socket goes back to a small idle set or is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import OrderedDict

import aiohttp

from .client import Reads, UpstreamClient
from .events import UpstreamFailure
from .settings import ResponsesSettings

log = logging.getLogger("loopwire.upstream.responses")

_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


class SocketDropped(UpstreamFailure):
    """The upstream socket closed (or could not be written) before this turn's first event."""


class NoFreeSocket(Exception):
    """Every upstream socket the bound allows is running a turn: this turn goes over HTTP."""


class UpstreamSocket:
    """One upstream WebSocket, running one response at a time. `latest_id` is the upstream response its
    connection cache ends with: a continuation of exactly that id may send only the new items."""

    __slots__ = (
        "__weakref__",
        "_closer",
        "_pending",
        "busy",
        "latest_id",
        "leased",
        "number",
        "used_at",
        "ws",
    )

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, number: int) -> None:
        self.ws = ws
        self.number = number
        self.busy = False
        self.leased = False
        self.latest_id: str | None = None
        self.used_at = time.monotonic()
        self._pending: asyncio.Task[aiohttp.WSMessage] | None = None
        self._closer: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        """False once closed, or once anything arrived between turns: the upstream closing it, or telling
        it is about to (loopwire sends `server_shutting_down` first), as on shutdown or at its age limit."""
        pending = self._pending
        return not self.ws.closed and (pending is None or not pending.done())

    def watch(self) -> None:
        """Between turns, keep one receive pending: a close frame from the upstream is answered at once
        (a server shutting down waits for that), and the next turn's first receive is this one."""
        if self._pending is None and not self.ws.closed:
            self._pending = asyncio.get_running_loop().create_task(self.ws.receive())
            self._pending.add_done_callback(self._idle_message)

    def _idle_message(self, task: asyncio.Task[aiohttp.WSMessage]) -> None:
        if task.cancelled():
            return
        task.exception()  # retrieved: a receive that failed while idle leaves the socket not open
        if self._pending is task and not self.busy:
            # unusable now; close it at once so an upstream that is shutting down need not wait for us
            self._closer = asyncio.get_running_loop().create_task(self.close())

    async def send(self, frame: bytes) -> None:
        try:
            await self.ws.send_frame(frame, aiohttp.WSMsgType.TEXT)
        except (aiohttp.ClientError, ConnectionError, OSError, RuntimeError) as error:
            raise SocketDropped(f"upstream socket {self.number} could not be written: {error!r}") from None

    async def receive(self, reads: Reads) -> str | bytes:
        """The next event's payload; SocketDropped when the socket ends first, a timeout failure when the
        upstream is silent too long."""
        pending, self._pending = self._pending, None
        try:
            async with asyncio.timeout_at(reads.deadline()):
                message = await (pending if pending is not None else self.ws.receive())
        except TimeoutError:
            raise reads.timed_out() from None
        if message.type == aiohttp.WSMsgType.TEXT or message.type == aiohttp.WSMsgType.BINARY:
            reads.got_data = True
            data: str | bytes = message.data
            return data
        if message.type in _CLOSED or message.type == aiohttp.WSMsgType.ERROR:
            raise SocketDropped(f"upstream socket {self.number} closed (code {self.ws.close_code})")
        raise UpstreamFailure(f"upstream socket {self.number} sent an unexpected {message.type!r} frame")

    async def close(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.cancel()
        with contextlib.suppress(aiohttp.ClientError, ConnectionError, OSError, RuntimeError):
            await self.ws.close()


class SocketLease:
    """A lane chain's claim on one upstream socket; held by that chain's render states."""

    __slots__ = ("__weakref__", "socket")

    def __init__(self, socket: UpstreamSocket) -> None:
        self.socket = socket


class SocketPool:
    """Every open upstream socket (at most `max_sockets`), and the idle ones whose chain has ended."""

    def __init__(self, settings: ResponsesSettings, client: UpstreamClient) -> None:
        self.settings = settings
        self.client = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._all: dict[int, UpstreamSocket] = {}
        self._idle: OrderedDict[int, UpstreamSocket] = OrderedDict()  # oldest first
        self._numbers = 0
        self._closing: set[asyncio.Task[None]] = set()
        self.opened = 0

    def __len__(self) -> int:
        return len(self._all)

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def lease(self) -> SocketLease:
        """A socket for a new chain: an idle one when there is one, else a new connection. At the bound,
        the least recently used socket that is not running a turn is closed first; when all are busy,
        NoFreeSocket tells the engine to use HTTP for this turn."""
        self._loop = asyncio.get_running_loop()
        self._expire_idle()
        while self._idle:
            _, socket = self._idle.popitem(last=True)
            if socket.open:
                return self._claim(socket)
            self._forget(socket)
        if len(self._all) >= self.settings.max_sockets and not self._make_room():
            raise NoFreeSocket(f"all {self.settings.max_sockets} upstream sockets are busy")
        ws = await self.client.connect()
        self._numbers += 1
        self.opened += 1
        socket = UpstreamSocket(ws, self._numbers)
        self._all[socket.number] = socket
        return self._claim(socket)

    def _claim(self, socket: UpstreamSocket) -> SocketLease:
        socket.leased = True
        socket.used_at = time.monotonic()
        lease = SocketLease(socket)
        weakref.finalize(lease, self._released, socket.number)
        return lease

    def _make_room(self) -> bool:
        candidates = [socket for socket in self._all.values() if not socket.busy]
        if not candidates:
            return False
        oldest = min(candidates, key=lambda socket: socket.used_at)
        log.info("closing upstream socket %d to stay within %d", oldest.number, self.settings.max_sockets)
        self.discard(oldest)
        return True

    def _released(self, number: int) -> None:
        """The lease's last reference went away. Called from its finalizer, which may run inside any code
        (or on another thread, from the cycle collector), so it only schedules the work on the loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # the engine is being torn down: aclose closes what is left
        with contextlib.suppress(RuntimeError):  # the loop closed in between
            loop.call_soon_threadsafe(self._on_released, number)

    def _on_released(self, number: int) -> None:
        socket = self._all.get(number)
        if socket is None:
            return
        socket.leased = False
        if socket.busy:
            return  # the turn running on it decides when it ends (see done)
        self._park(socket)

    def _park(self, socket: UpstreamSocket) -> None:
        if socket.open and len(self._idle) < self.settings.idle_sockets:
            socket.used_at = time.monotonic()
            self._idle[socket.number] = socket
        else:
            self.discard(socket)

    def done(self, socket: UpstreamSocket, *, reusable: bool) -> None:
        """A turn on `socket` ended; a socket left mid-response (timeout, cancel, drop) is closed."""
        socket.busy = False
        socket.used_at = time.monotonic()
        if not reusable:
            socket.latest_id = None
            self.discard(socket)
            return
        socket.watch()
        if not socket.leased:
            self._park(socket)

    def discard(self, socket: UpstreamSocket) -> None:
        self._forget(socket)
        if socket.open:
            task = asyncio.get_running_loop().create_task(socket.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _forget(self, socket: UpstreamSocket) -> None:
        self._all.pop(socket.number, None)
        self._idle.pop(socket.number, None)

    def _expire_idle(self) -> None:
        horizon = time.monotonic() - self.settings.socket_idle_s
        while self._idle:
            socket = next(iter(self._idle.values()))
            if socket.used_at > horizon:
                break
            self.discard(socket)

    async def aclose(self) -> None:
        sockets = list(self._all.values())
        self._all.clear()
        self._idle.clear()
        await asyncio.gather(*(socket.close() for socket in sockets), *self._closing)
