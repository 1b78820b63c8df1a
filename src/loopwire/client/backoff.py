"""Reconnect pacing: exponential backoff with jitter, and when to give up on the socket for a while.

Owns the numbers and the counting (time and randomness are passed in); never sleeps or connects itself.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry k after k consecutive failures: `base_s * factor**(k-1)` capped at `max_s`,
    with equal jitter (a uniform draw in the upper half), so clients that failed together spread out."""

    base_s: float = 0.05
    factor: float = 2.0
    max_s: float = 2.0

    def delay(self, failures: int, rng: random.Random) -> float:
        if failures <= 0:
            return 0.0
        ceiling = min(self.max_s, self.base_s * self.factor ** (failures - 1))
        return ceiling / 2 + rng.random() * ceiling / 2


class SocketHealth:
    """Consecutive socket failures (connects that failed, sockets that dropped during a turn). At
    `max_failures`, or at once on an HTTP 426 to the upgrade, the socket is off for `cooldown_s` and turns
    go over HTTP. After the cool-down the socket is tried again; a success clears the count, a failure
    puts it straight back to HTTP for another cool-down."""

    __slots__ = ("_until", "cooldown_s", "failures", "max_failures")

    def __init__(self, max_failures: int, cooldown_s: float) -> None:
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        self.max_failures = max_failures
        self.cooldown_s = cooldown_s
        self.failures = 0
        self._until: float | None = None

    def socket_allowed(self, now: float) -> bool:
        return self._until is None or now >= self._until

    def failure(self, now: float) -> bool:
        """Count one failure; True when it sends the session to HTTP."""
        self.failures += 1
        if self.failures >= self.max_failures:
            self._until = now + self.cooldown_s
            return True
        return False

    def refused(self, now: float) -> None:
        """The server cannot serve WebSocket mode (426): HTTP until the cool-down ends."""
        self.failures = max(self.failures, self.max_failures)
        self._until = now + self.cooldown_s

    def success(self) -> None:
        self.failures = 0
        self._until = None
