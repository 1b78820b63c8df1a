"""The link emulator: a TCP proxy on 127.0.0.1 that shapes every connection it forwards to one target.

Owns the listening socket, the registry of connections (open and recently closed), cuts on demand and
the totals; it must not shape bytes itself (connections and their pipes do) nor parse command lines.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from types import TracebackType

from .connection import ProxyConnection
from .pipe import READ_BYTES
from .profiles import Direction, LinkProfile, resolve_profile
from .stats import ConnectionStats, LinkTotals
from .timer import Clock, TimerCalibration, TimerStats

DEFAULT_MAX_HELD_BYTES = 4 * 1024 * 1024
"""Per direction of each connection: the most the emulator holds (serialising, propagating, or waiting for
a slow reader) before it stops reading from the sender."""
DEFAULT_HISTORY = 1024


def parse_address(address: str | tuple[str, int] | int) -> tuple[str, int]:
    """Accepts "host:port", "[v6]:port", a (host, port) tuple, or a bare port (on 127.0.0.1)."""
    if isinstance(address, int):
        return "127.0.0.1", address
    if isinstance(address, tuple):
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class LinkEmulator:
    """Listens on `host:port` (port 0: any free port, see `.port`) and forwards each accepted connection
    to `target` ("host:port", (host, port), or a port on 127.0.0.1), shaping `up` (client to target)
    and `down` independently per `profile` (a LinkProfile or a name in PROFILES).

        async with LinkEmulator("127.0.0.1:8000", "wan") as link:
            ...connect to f"127.0.0.1:{link.port}"...
            link.cut_all()                      # reset every open connection
            print(link.totals(), link.all_stats())

    Changing `profile` affects connections accepted afterwards. Jitter is drawn from a RNG seeded with
    (`seed`, connection id, direction), so a run is reproducible given the same traffic.
    `timer_bias_ms`: None learns how early to arm delivery timers so their mean error is ~0 (see
    TimerCalibration); 0 never delivers early, at the cost of ~0.2-0.9 ms mean lateness per direction.
    """

    def __init__(
        self,
        target: str | tuple[str, int] | int,
        profile: LinkProfile | str = "loopback",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        max_held_bytes: int = DEFAULT_MAX_HELD_BYTES,
        emulate_handshake: bool = True,
        timer_bias_ms: float | None = None,
        history: int = DEFAULT_HISTORY,
        clock: Clock = time.monotonic,
    ) -> None:
        if max_held_bytes <= 0:
            raise ValueError("max_held_bytes must be > 0")
        self.target = parse_address(target)
        self.profile = resolve_profile(profile)
        self.host = host
        self.port = port
        self.seed = seed
        self.max_held_bytes = max_held_bytes
        self.emulate_handshake = emulate_handshake
        self._clock = clock
        self._calibration = TimerCalibration(None if timer_bias_ms is None else timer_bias_ms / 1000.0)
        self._history = history
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open: dict[int, ProxyConnection] = {}
        self._closed: OrderedDict[int, ConnectionStats] = OrderedDict()
        self._closed_bytes = {"up": 0, "down": 0}
        self._accepted = 0
        self._cut_next: deque[tuple[int, Direction]] = deque()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._connect_tasks: set[asyncio.Task[None]] = set()
        self._read_buffer = memoryview(bytearray(READ_BYTES))

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> LinkEmulator:
        if self._server is not None:
            raise RuntimeError("already started")
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            self._accept, self.host, self.port, reuse_address=True, backlog=1024
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def aclose(self) -> None:
        """Stops listening and resets every open connection (what is still on the link is lost)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._open.values()):
            connection.cut("shutdown")
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        self._waiters.clear()
        tasks = list(self._connect_tasks)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        await asyncio.sleep(0)  # let the aborted transports report connection_lost

    async def __aenter__(self) -> LinkEmulator:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    # -- connections ----------------------------------------------------------------------------------

    def _accept(self) -> asyncio.BaseProtocol:
        assert self._loop is not None
        self._accepted += 1
        connection = ProxyConnection(
            self._accepted,
            self.profile,
            self.target,
            loop=self._loop,
            clock=self._clock,
            calibration=self._calibration,
            seed=self.seed,
            max_held_bytes=self.max_held_bytes,
            emulate_handshake=self.emulate_handshake,
            on_closed=self._forget,
            tasks=self._connect_tasks,
            read_buffer=self._read_buffer,
        )
        self._open[connection.id] = connection
        if self._cut_next:
            n_bytes, direction = self._cut_next.popleft()
            connection.pipe(direction).cut_after(n_bytes)
        self._wake_waiters()
        return connection.client_protocol

    def _forget(self, connection: ProxyConnection) -> None:
        self._open.pop(connection.id, None)
        for direction in ("up", "down"):
            self._closed_bytes[direction] += connection.stats.direction(direction).bytes
        self._closed[connection.id] = connection.stats
        while len(self._closed) > self._history:
            self._closed.popitem(last=False)

    def _wake_waiters(self) -> None:
        still = []
        for count, waiter in self._waiters:
            if waiter.done():
                continue
            if self._accepted >= count:
                waiter.set_result(None)
            else:
                still.append((count, waiter))
        self._waiters = still

    async def wait_for_accepted(self, count: int) -> None:
        """Returns once `count` connections have been accepted since start (in total); bound it with
        `asyncio.timeout()`."""
        if self._accepted >= count:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((count, waiter))
        await waiter

    def open_connections(self) -> list[int]:
        """Ids of the open connections, oldest first (ids count from 1 in accept order)."""
        return sorted(self._open)

    def stats(self, connection_id: int) -> ConnectionStats:
        """A copy of one connection's counters (open, or among the last `history` closed ones)."""
        connection = self._open.get(connection_id)
        if connection is not None:
            return connection.stats.copy()
        return self._closed[connection_id].copy()

    def all_stats(self) -> list[ConnectionStats]:
        """Copies of the counters of every open and remembered closed connection, by id."""
        everything = [c.stats for c in self._open.values()] + list(self._closed.values())
        return [s.copy() for s in sorted(everything, key=lambda s: s.id)]

    def totals(self) -> LinkTotals:
        return LinkTotals(
            connections_accepted=self._accepted,
            connections_open=len(self._open),
            bytes_up=self._closed_bytes["up"] + sum(c.stats.up.bytes for c in self._open.values()),
            bytes_down=self._closed_bytes["down"] + sum(c.stats.down.bytes for c in self._open.values()),
        )

    def timer_stats(self) -> TimerStats:
        """How far from their computed arrival times timed deliveries happened, over all connections."""
        return self._calibration.stats()

    # -- cuts -----------------------------------------------------------------------------------------

    def cut(self, connection_id: int) -> bool:
        """Resets both sides of one connection now; False if it is not open."""
        connection = self._open.get(connection_id)
        if connection is None:
            return False
        connection.cut()
        return True

    def cut_all(self) -> int:
        """Resets both sides of every open connection now; returns how many."""
        connections = list(self._open.values())
        for connection in connections:
            connection.cut()
        return len(connections)

    def cut_after(self, connection_id: int, n_bytes: int, direction: Direction) -> None:
        """Resets one open connection once `n_bytes` more bytes have passed in `direction` (the
        receiving side gets exactly those bytes, then the reset); at once if `n_bytes` <= 0."""
        connection = self._open.get(connection_id)
        if connection is None:
            raise KeyError(f"no open connection {connection_id}")
        connection.pipe(direction).cut_after(n_bytes)

    def cut_next_after(self, n_bytes: int, direction: Direction) -> None:
        """The same for the next connection accepted (calls queue up: one cut per future connection)."""
        self._cut_next.append((n_bytes, direction))
