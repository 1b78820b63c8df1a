"""Admission that holds across nodes: the per-key token bucket and connection cap kept in the Redis the store
uses, each check one atomic script (one round trip).

Connections are leases: each open WebSocket holds a lease id under its key with an expiry that this node's
heartbeat pushes forward, so the places of a node that dies (SIGKILL, power) come back once its leases
expire. While Redis is unreachable both limits fall back to this node's own (LocalAdmission): a node never
stalls or refuses everything because Redis is down. Owns the node id, its leases and the heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from ..core.limits import Limits
from ..store.base import StoreUnavailable
from ..store.redis import scripts
from ..store.redis.link import LuaScript
from ..store.redis.store import RedisStore, owner_tag
from .admission import LocalAdmission, Ticket

log = logging.getLogger("loopwire.server")

DEFAULT_LEASE_S = 15.0
"""How long a connection's place outlives the last heartbeat of its node (refreshed every third of it)."""


class RedisAdmission:
    def __init__(
        self,
        store: RedisStore,
        limits: Limits,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        node_id: str | None = None,
    ) -> None:
        if lease_s <= 0:
            raise ValueError(f"the connection lease must be > 0 seconds, got {lease_s}")
        self.link = store.link
        self.prefix = store.prefix
        self.limits = limits
        self.lease_ms = max(1, round(lease_s * 1000))
        self.node_id = node_id or uuid.uuid4().hex[:12]
        self.local = LocalAdmission(limits)
        self.held: dict[str, set[str]] = {}
        """Lease ids of this node's open connections, by owner: what the heartbeat refreshes."""
        self._heartbeat: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[None]] = set()

    def _key(self, owner: str, kind: str) -> str:
        return f"{self.prefix}{{{owner_tag(owner)}}}:{kind}"

    async def rate_wait(self, owner: str) -> float:
        rate = self.limits.rate_limit_per_s
        if rate <= 0:
            return 0.0
        try:
            reply = await self.link.script(
                scripts.TAKE_TOKEN, [self._key(owner, "rate")], [repr(rate), self.limits.rate_limit_burst]
            )
        except StoreUnavailable:
            return self.local.rate_wait_now(owner)
        return float(reply)

    async def open_connection(self, owner: str) -> Ticket | None:
        self._start_heartbeat()
        lease = f"{self.node_id}:{uuid.uuid4().hex[:12]}"
        cap = self.limits.max_connections_per_key
        try:
            admitted = await self.link.script(
                scripts.ACQUIRE_LEASE, [self._key(owner, "conns")], [lease, cap, self.lease_ms]
            )
        except StoreUnavailable:
            # This node's own cap; the heartbeat writes the lease into Redis once it is reachable again.
            local = self.local.open_now(owner)
            if local is None:
                return None
        else:
            if not admitted:
                return None
            self.local.count(owner)
        self.held.setdefault(owner, set()).add(lease)
        return Ticket(owner, lease)

    def close_connection(self, ticket: Ticket) -> None:
        self.local.close_connection(ticket)
        held = self.held.get(ticket.owner)
        if held is not None:
            held.discard(ticket.lease)
            if not held:
                del self.held[ticket.owner]
        try:
            task = asyncio.get_running_loop().create_task(self._release(ticket))
        except RuntimeError:  # no loop (shutdown): the lease expires on its own
            return
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, ticket: Ticket) -> None:
        with contextlib.suppress(StoreUnavailable):  # unreachable: the lease expires on its own
            await self.link.script(scripts.RELEASE_LEASE, [self._key(ticket.owner, "conns")], [ticket.lease])

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat(), name="loopwire-leases")

    async def _beat(self) -> None:
        interval = self.lease_ms / 3000
        while True:
            await asyncio.sleep(interval)
            await self.refresh()

    async def refresh(self) -> None:
        """Push the expiry of every lease this node holds forward (one pipelined round trip)."""
        calls: list[tuple[LuaScript, list[str], list[str | bytes | int]]] = [
            (scripts.REFRESH_LEASES, [self._key(owner, "conns")], [self.lease_ms, *sorted(leases)])
            for owner, leases in self.held.items()
            if leases
        ]
        if not calls:
            return
        try:
            await self.link.scripts(calls)
        except StoreUnavailable as error:
            log.debug("connection leases not refreshed: %s", error)

    async def aclose(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self._releases:
            await asyncio.wait(self._releases, timeout=self.link.call_timeout_s)
