"""Where a turn's request goes: the open socket, a new one (reconnect with backoff, rotation), or HTTP.

Owns the socket's lifecycle and the fallback state; knows nothing of conversations or of what is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

from .backoff import SocketHealth
from .errors import TransportError, UpgradeRefused
from .events import RESUME_HEADER
from .options import SessionOptions, TransportName
from .result import TurnMetrics
from .socket import ClientSocket
from .ws import WsConnection
from .ws_deflate import DeflateWsConnection


@dataclass(frozen=True, slots=True)
class Route:
    """The transport of one request; `conn` is the socket when it is "ws"."""

    name: TransportName
    conn: ClientSocket | None = None


class Router:
    """For `ws` sessions: keeps one socket, opens a new one when it was lost (after a backoff delay when
    sockets have been failing) or is older than `rotate_after_s`, and routes to HTTP (chained when
    `store`, else full) while the socket health says so. HTTP sessions always route to themselves."""

    def __init__(
        self,
        transport: TransportName,
        *,
        store: bool,
        ws_url: str,
        headers: Mapping[str, str],
        options: SessionOptions,
        rng: random.Random,
    ) -> None:
        self.transport: TransportName = transport
        self.fallback = Route("http-chained" if store else "http-full")
        self.ws_url = ws_url
        self._headers = headers
        self._options = options
        self._rng = rng
        self.health = SocketHealth(options.max_socket_failures, options.fallback_cooldown_s)
        self.conn: ClientSocket | None = None
        self._ever_connected = False
        self._lost: ClientSocket | None = None
        """The last socket dropped with its lanes on the server (its resume token is presented next)."""

    def socket_allowed(self) -> bool:
        return self.transport == "ws" and self.health.socket_allowed(time.monotonic())

    async def route(self, metrics: TurnMetrics) -> Route:
        if self.transport != "ws":
            return Route(self.transport)
        if not self.health.socket_allowed(time.monotonic()):
            return self.fallback
        conn = self.conn
        if conn is not None:
            if conn.usable and conn.age(time.monotonic()) < self._options.rotate_after_s:
                return Route("ws", conn)
            self.conn = None
            if not conn.usable and not conn.inbox.retiring:
                self._keep_for_resume(conn)  # dropped between turns
            if conn.usable:  # old, not lost: retire it ourselves before the server does
                metrics.rotated = True
            await conn.close()  # at once when already closed; else the close handshake
        return await self._connect(metrics)

    async def _connect(self, metrics: TurnMetrics) -> Route:
        while True:
            failures = self.health.failures
            if failures:
                await asyncio.sleep(self._options.backoff.delay(failures, self._rng))
            try:
                conn = await self._open()
            except UpgradeRefused as refused:
                if refused.status == 426:  # the server cannot serve WebSocket mode: HTTP at once
                    self.health.refused(time.monotonic())
                    metrics.fell_back = True
                    return self.fallback
                if self._failed(metrics):
                    return self.fallback
                continue
            except TransportError:
                if self._failed(metrics):
                    return self.fallback
                continue
            if self._ever_connected and not metrics.rotated:
                metrics.reconnects += 1
            self._ever_connected = True
            self.conn = conn
            lost, self._lost = self._lost, None
            if lost is not None and conn.inbox.resumed:
                conn.resumed_from = lost
                metrics.resumed = True
            return Route("ws", conn)

    async def _open(self) -> ClientSocket:
        headers = dict(self._headers)
        token = self._lost.inbox.resume_token if self._lost is not None else None
        if self._options.resume:
            headers[RESUME_HEADER] = token or "new"
        if self._options.ws_deflate:
            conn: ClientSocket = await DeflateWsConnection.open(self.ws_url, headers, self._options)
        else:
            conn = await WsConnection.open(self.ws_url, headers, self._options)
        if self._options.resume and token is not None:  # whether the lanes came back decides the next plan
            # (a server that stopped issuing tokens sends nothing: then it is a plain new socket)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.inbox.resume_seen.wait(), self._options.connect_timeout_s)
        return conn

    def _failed(self, metrics: TurnMetrics) -> bool:
        if self.health.failure(time.monotonic()):
            metrics.fell_back = True
            return True
        return False

    def lost(self, route: Route, metrics: TurnMetrics) -> None:
        """The link of `route` failed during a request: drop the socket and count a failure."""
        if route.conn is None:
            return
        self.drop(route.conn)
        self._failed(metrics)

    def _keep_for_resume(self, conn: ClientSocket) -> None:
        if conn.inbox.resume_token is not None:
            self._lost = conn

    def drop(self, conn: ClientSocket) -> None:
        """Abort a socket whose request was abandoned; not a failure of the socket."""
        self._keep_for_resume(conn)
        conn.abort()
        if self.conn is conn:
            self.conn = None

    def served(self, route: Route) -> None:
        if route.conn is not None:
            self.health.success()

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await conn.close()
