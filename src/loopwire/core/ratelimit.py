"""Per-key rate limiting: a token bucket for each owner, in a bounded table.

Sans-I/O: the caller passes the clock; it answers how long to wait, and never sleeps or sends anything.
"""

from __future__ import annotations

from collections import OrderedDict


class TokenBucket:
    """`rate` tokens per second up to `burst`; each request takes one."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one will be there."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """Buckets by owner. The table keeps the most recently seen `max_owners`; a forgotten owner starts
    again with a full bucket, which only ever errs towards letting a request through."""

    def __init__(self, rate_per_s: float, burst: float, *, max_owners: int = 100_000) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate = rate_per_s
        self.burst = burst
        self.max_owners = max_owners
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, owner: str, now: float) -> float:
        """0.0 when the request may go ahead, else how many seconds to wait (Retry-After)."""
        bucket = self._buckets.get(owner)
        if bucket is None:
            bucket = self._buckets[owner] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_owners:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(owner)
        return bucket.take(now)

    def __len__(self) -> int:
        return len(self._buckets)
