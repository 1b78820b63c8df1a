"""One proxied TCP connection: the accepted client socket, the socket to the target, and a pipe each way.

Owns both transports' lifecycle (connect, half-close, graceful close, cut with a reset); it must not time
or hold bytes itself (the pipes do) nor know about other connections (the emulator does).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Callable
from typing import Literal, cast

from .pipe import Pipe
from .profiles import Direction, LinkProfile
from .schedule import LinkSchedule
from .sockets import abort_with_reset, peer_name, set_nodelay
from .stats import ConnectionStats
from .timer import Clock, TimerCalibration

Side = Literal["client", "server"]


class SideProtocol(asyncio.BufferedProtocol):
    """The protocol on one of the two sockets: reads go into the pipe leaving this side, write pauses
    stop the pipe arriving at this side."""

    def __init__(self, connection: ProxyConnection, side: Side, read_buffer: memoryview) -> None:
        self._connection = connection
        self._side = side
        self._inbound, self._outbound = connection.pipes_of(side)
        self._view = read_buffer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transports implement asyncio.Transport without subclassing it
        self._connection.side_made(self._side, cast(asyncio.Transport, transport))

    def get_buffer(self, sizehint: int) -> memoryview:
        # sized to the room left, so a read never takes more than the memory cap or queue limit allow
        return self._view[: max(1, self._inbound.read_room())]

    def buffer_updated(self, nbytes: int) -> None:
        # copied out at once, so one buffer serves every socket of the emulator (reads are sequential)
        self._inbound.feed(bytes(self._view[:nbytes]))

    def eof_received(self) -> bool:
        self._inbound.feed_eof()
        return True  # half-close: keep the transport, the other direction may still be sending

    def pause_writing(self) -> None:
        self._outbound.sink_paused()

    def resume_writing(self) -> None:
        self._outbound.sink_resumed()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connection.side_lost(self._side, exc)


class ProxyConnection:
    """Connects to the target when the client is accepted, then shapes `up` (client to target) and `down`.

    With `emulate_handshake`, the client's first bytes leave no earlier than one RTT after the accept: the
    kernel completed the client's handshake with the emulator at once, but over the emulated link the
    client could only have sent after its SYN and the SYN-ACK crossed it.
    """

    def __init__(
        self,
        connection_id: int,
        profile: LinkProfile,
        target: tuple[str, int],
        *,
        loop: asyncio.AbstractEventLoop,
        clock: Clock,
        calibration: TimerCalibration,
        seed: int,
        max_held_bytes: int,
        emulate_handshake: bool,
        on_closed: Callable[[ProxyConnection], None],
        tasks: set[asyncio.Task[None]],
        read_buffer: memoryview,
    ) -> None:
        self.id = connection_id
        self._loop = loop
        self._target = target
        self._on_closed = on_closed
        self._tasks = tasks
        self._read_buffer = read_buffer
        self._clock = clock
        now = clock()
        self.stats = ConnectionStats(id=connection_id, peer="", opened_at=now)
        self.closed = False
        self._reset_after_eof = False
        self._client: asyncio.Transport | None = None
        self._server: asyncio.Transport | None = None
        self.connect_task: asyncio.Task[None] | None = None
        hold = now + profile.rtt_ms / 1000.0 if emulate_handshake and profile.rtt_ms > 0 else -math.inf

        def pipe(direction: Direction, not_before: float) -> Pipe:
            rng = random.Random(f"{seed}:{connection_id}:{direction}")
            return Pipe(
                direction,
                LinkSchedule(profile.shape(direction), rng, not_before=not_before),
                loop=loop,
                clock=clock,
                calibration=calibration,
                stats=self.stats.direction(direction),
                max_held_bytes=max_held_bytes,
                on_cut=self.cut,
                on_eof_delivered=self._eof_delivered,
                on_reset_delivered=self._reset_delivered,
            )

        self.up = pipe("up", hold)
        self.down = pipe("down", -math.inf)
        self.client_protocol = SideProtocol(self, "client", read_buffer)

    def pipe(self, direction: Direction) -> Pipe:
        return self.up if direction == "up" else self.down

    def pipes_of(self, side: Side) -> tuple[Pipe, Pipe]:
        """(the pipe this side sends into, the pipe that delivers to this side)."""
        return (self.up, self.down) if side == "client" else (self.down, self.up)

    # -- transports -----------------------------------------------------------------------------------

    def side_made(self, side: Side, transport: asyncio.Transport) -> None:
        if self.closed:
            abort_with_reset(transport)
            return
        set_nodelay(transport)
        inbound, outbound = self.pipes_of(side)
        if side == "client":
            self._client = transport
            self.stats.peer = peer_name(transport)
            task = self._loop.create_task(self._connect())
            self.connect_task = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._server = transport
        inbound.attach_source(transport)
        outbound.attach_sink(transport)

    async def _connect(self) -> None:
        host, port = self._target
        try:
            await self._loop.create_connection(
                lambda: SideProtocol(self, "server", self._read_buffer), host, port
            )
        except OSError:
            self._finish("connect failed", reset=True)

    def side_lost(self, side: Side, exc: Exception | None) -> None:
        if self.closed:
            return
        if side == "client":
            self._client = None
        else:
            self._server = None
        inbound, outbound = self.pipes_of(side)
        outbound.close()  # nothing can reach this side any more
        if exc is None:  # closed without an error: as good as an EOF
            inbound.feed_eof()
            self._maybe_finish()
        elif not inbound.source_done:
            inbound.feed_reset()  # the reset reaches the other side behind the bytes sent before it
        elif inbound.finished:
            self._finish("reset", reset=True)
        else:
            self._reset_after_eof = True

    def _eof_delivered(self) -> None:
        if self._reset_after_eof:
            self._finish("reset", reset=True)
        else:
            self._maybe_finish()

    def _reset_delivered(self) -> None:
        self._finish("reset", reset=True)

    def _maybe_finish(self) -> None:
        if self.up.done and self.down.done:
            self._finish("closed", reset=False)

    # -- ending ---------------------------------------------------------------------------------------

    def cut(self, reason: str = "cut") -> None:
        """Closes both sides abruptly, with a TCP reset; whatever is still on the emulated link is lost."""
        self._finish(reason, reset=True)

    def _finish(self, reason: str, *, reset: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.up.close()
        self.down.close()
        for transport in (self._client, self._server):
            if transport is None:
                continue
            if reset:
                abort_with_reset(transport)
            else:
                with contextlib.suppress(RuntimeError):
                    transport.close()  # flushes what the transport still buffers, then FIN
        self._client = self._server = None
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
        self.stats.closed_at = self._clock()
        self.stats.close_reason = reason
        self._on_closed(self)
