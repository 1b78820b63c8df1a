"""Admission per API key: the create rate (a token bucket) and the open WebSocket connections (a cap).

Owns the Admission interface and its in-process implementation, which holds for one node; the shared one
that holds across nodes is in shared_admission.py. It answers "go" or "how long to wait" / "over the cap";
the caller turns that into the protocol's errors.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Protocol

from ..core.limits import Limits
from ..core.ratelimit import RateLimiter


@dataclass(frozen=True, slots=True)
class Ticket:
    """One admitted WebSocket connection; handed back to close_connection() when it ends."""

    owner: str
    lease: str


class Admission(Protocol):
    async def rate_wait(self, owner: str) -> float:
        """0.0 when a create may go ahead (and is counted), else the seconds to wait (Retry-After)."""
        ...

    async def open_connection(self, owner: str) -> Ticket | None:
        """A ticket for a new connection, or None when the key is at `max_connections_per_key`."""
        ...

    def close_connection(self, ticket: Ticket) -> None:
        """Give the connection's place back. Never blocks: it runs in a closing socket's cleanup."""
        ...

    async def aclose(self) -> None: ...


class LocalAdmission:
    """Both limits in this process only: with N nodes a key gets N times the rate and the connections."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.rate_limiter = (
            RateLimiter(limits.rate_limit_per_s, limits.rate_limit_burst)
            if limits.rate_limit_per_s > 0
            else None
        )
        self.connections_by_owner: dict[str, int] = {}
        self._leases = itertools.count(1)

    def rate_wait_now(self, owner: str) -> float:
        if self.rate_limiter is None:
            return 0.0
        return self.rate_limiter.check(owner, time.monotonic())

    async def rate_wait(self, owner: str) -> float:
        return self.rate_wait_now(owner)

    def count(self, owner: str) -> Ticket:
        """Count a connection without checking the cap (one admitted elsewhere, e.g. by a shared cap)."""
        self.connections_by_owner[owner] = self.connections_by_owner.get(owner, 0) + 1
        return Ticket(owner, str(next(self._leases)))

    def open_now(self, owner: str) -> Ticket | None:
        if self.connections_by_owner.get(owner, 0) >= self.limits.max_connections_per_key:
            return None
        return self.count(owner)

    async def open_connection(self, owner: str) -> Ticket | None:
        return self.open_now(owner)

    def close_connection(self, ticket: Ticket) -> None:
        count = self.connections_by_owner.get(ticket.owner, 0) - 1
        if count > 0:
            self.connections_by_owner[ticket.owner] = count
        else:
            self.connections_by_owner.pop(ticket.owner, None)

    async def aclose(self) -> None:
        return None
