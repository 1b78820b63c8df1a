"""Where a socket's incoming messages wait for the turn that reads them, whichever library delivers them.

Owns the hand-over (messages while a turn reads, the server's retirement notice between turns, the
wake-up, the read timeout) and one turn's exchange loop; must not open, send on or close a socket.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable

from .errors import ConnectionLost
from .events import CONNECTION_RETIRED, RESUME_EVENT, decode
from .result import TurnMetrics

_RETIRED_MARK = CONNECTION_RETIRED.encode()
_RESUME_PREFIX = b'{"type":"' + RESUME_EVENT.encode() + b'"'


class FrameInbox:
    """Messages that arrive while a turn is reading are queued for it; between turns only an unasked
    age-limit notice matters (the socket is retiring)."""

    def __init__(self) -> None:
        self.frames: deque[bytes] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.reading = False
        self.closed = False
        self.retiring = False
        self.resume_token: str | None = None
        """The server's reconnect-grace token for this socket (`loopwire.resume_token`), once it came."""
        self.resumed = False
        """The server gave this socket the lanes of the dropped one whose token it presented."""
        self.resume_seen = asyncio.Event()

    def deliver(self, payload: bytes) -> None:
        if payload.startswith(_RESUME_PREFIX):  # the connection's own notice: never part of a turn
            event = decode(payload)
            token = event.get("token")
            self.resume_token = token if isinstance(token, str) else None
            self.resumed = event.get("resumed") is True
            self.resume_seen.set()
            return
        if self.reading:
            self.frames.append(payload)
            self._wake()
        elif _RETIRED_MARK in payload:
            self.retiring = True

    def disconnected(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def exchange(
        self,
        send: Callable[[bytes], Awaitable[None]],
        body: bytes,
        metrics: TurnMetrics,
        read_timeout_s: float | None,
        abort: Callable[[], None],
    ) -> AsyncGenerator[bytes, None]:
        """Send `body` and yield every message that follows until the caller stops reading. Raises
        ConnectionLost when the socket closes, or stays silent past `read_timeout_s` (then `abort`s it)."""
        if self.closed:
            raise ConnectionLost("the socket closed before the request was sent")
        self.frames.clear()
        self.reading = True
        try:
            await send(body)
            metrics.bytes_up += len(body)
            while True:
                while self.frames:
                    payload = self.frames.popleft()
                    metrics.bytes_down += len(payload)
                    yield payload
                if self.closed:
                    raise ConnectionLost("the socket closed during the turn")
                await self._wait(read_timeout_s, abort)
        finally:
            self.reading = False
            if any(_RETIRED_MARK in payload for payload in self.frames):
                self.retiring = True  # the age-limit notice came right behind the turn's last event
            self.frames.clear()

    async def _wait(self, read_timeout_s: float | None, abort: Callable[[], None]) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self.waiter = waiter
        try:
            if read_timeout_s is None:
                await waiter
            else:
                try:
                    await asyncio.wait_for(waiter, read_timeout_s)
                except TimeoutError:
                    abort()
                    raise ConnectionLost(f"no event for {read_timeout_s:g} s") from None
        finally:
            self.waiter = None
