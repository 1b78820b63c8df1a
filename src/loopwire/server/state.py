"""The server-wide parts every transport shares: engine, store, limits, settings, and the registries that
span connections (open connections per key, the cache budget, rate limits, metrics).

Owns their lifetime (open at startup, close at shutdown); holds no single connection's state.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from ..core.budget import CacheBudget
from ..core.connection import ConnectionState
from ..core.limits import Limits
from ..engines.base import CountingEngine, Engine
from ..protocol.errors import rate_limited, too_many_connections
from ..store.base import Store, StoreUnavailable
from ..store.factory import redis_store_of
from .admission import Admission, LocalAdmission, Ticket
from .auth import ApiKeys
from .metrics import Metrics
from .resume import ResumeRegistry

log = logging.getLogger("loopwire.server")


@dataclass(slots=True)
class ServerSettings:
    ws_per_message_deflate: bool = False
    """permessage-deflate costs ~80-160 us of CPU per small turn on loopback, so it is opt-in."""
    graceful_shutdown_s: int = 30
    """On SIGTERM, how long running turns may take to finish before they are cancelled."""
    resume_grace_s: float = 0.0
    """Reconnect grace: how long the lane caches of a WebSocket that dropped uncleanly are kept for a new
    socket presenting its resume token (0: off)."""
    node_id: str = ""
    """This node's name in resume tokens (what a balancer routes a token on); empty: a random one."""
    drain_s: float = 0.0
    """On SIGTERM, how long /readyz answers 503 (everything else still served) before the shutdown starts."""
    timing_events: bool = False
    """Send a `loopwire.timing` event before each terminal event with the server's time breakdown."""
    merge_ready_deltas: bool = True
    """Send text/argument deltas the engine produced at the same moment as one event (fewer frames)."""
    ignored_client_events: frozenset[str] = frozenset({"response.processed"})
    """Client events some clients send for bookkeeping only; accepted silently."""


@dataclass(slots=True)
class ServerState:
    engine: Engine
    store: Store
    limits: Limits = field(default_factory=Limits)
    settings: ServerSettings = field(default_factory=ServerSettings)
    api_keys: ApiKeys = field(default_factory=ApiKeys)
    metrics: Metrics = field(default_factory=Metrics)
    connections: set[ConnectionState[Any]] = field(default_factory=set)
    """Open WebSocket connections, for /metrics (connections, cached lanes)."""

    budget: CacheBudget = field(init=False)
    resume: ResumeRegistry = field(init=False)
    """Parked lane caches of dropped sockets (reconnect grace)."""
    shared_admission: Admission | None = None
    """Limits shared by all nodes (RedisAdmission); without it each node keeps its own."""
    admission: Admission = field(init=False)
    """The per-key rate and connection cap in force."""
    started_at: float = field(default_factory=time.time)
    """Unix time the state was built (the `created` of the models it lists)."""

    def __post_init__(self) -> None:
        self.budget = CacheBudget(self.limits.cache_budget_bytes)
        node_id = self.settings.node_id or secrets.token_hex(4)
        self.resume = ResumeRegistry(node_id, self.settings.resume_grace_s)
        self.admission = self.shared_admission or LocalAdmission(self.limits)

    async def check_rate(self, owner: str) -> None:
        """Raise the 429 error when this key is over its create rate."""
        wait = await self.admission.rate_wait(owner)
        if wait > 0:
            raise rate_limited(wait)

    async def open_connection(self, owner: str) -> Ticket:
        """Admit a new WebSocket for this key; raise the 429 error past `max_connections_per_key`."""
        ticket = await self.admission.open_connection(owner)
        if ticket is None:
            raise too_many_connections(self.limits.max_connections_per_key)
        return ticket

    def close_connection(self, ticket: Ticket) -> None:
        self.admission.close_connection(ticket)

    def render_metrics(self) -> bytes:
        self.metrics.connections.set((), len(self.connections))
        self.metrics.lanes.set((), sum(conn.cached_count for conn in self.connections))
        self.metrics.cached_bytes.set((), self.budget.total)
        if isinstance(self.engine, CountingEngine):
            for count in self.engine.counters():
                self.metrics.set_engine_count(count.name, count.help, count.labels, count.value)
        self.metrics.parked.set((), self.resume.parked)
        self.metrics.resumed.set((), self.resume.resumed)
        shared = redis_store_of(self.store)
        if shared is not None:
            self.metrics.store_round_trips.set_total((), shared.round_trips)
            self.metrics.store_up.set((), 1.0 if shared.available else 0.0)
        return self.metrics.render()

    async def aclose(self) -> None:
        self.resume.close()
        await self.admission.aclose()
        await self.engine.aclose()
        try:
            await self.store.aclose()
        except StoreUnavailable:
            log.exception("the store could not be closed cleanly; unwritten responses are listed above")
