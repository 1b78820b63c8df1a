"""The timing model of one direction of one link: when each segment finishes serialising, and when it arrives.

Owns the arithmetic only (when the link is free, jitter, order clamping, queue backlog); it must not touch
sockets, timers or the event loop: every call takes the current time as an argument.
"""

from __future__ import annotations

import math
import random

from .profiles import DirectionShape

SEGMENT_SECONDS = 0.001
"""A bandwidth-limited link delivers in segments of about this much serialisation time, so the first bytes of
a large write arrive before its last ones (as packets would), without a timer per packet."""
MIN_SEGMENT_BYTES = 1448
MAX_SEGMENT_BYTES = 64 * 1024


class LinkSchedule:
    """Arrival times for the segments handed to one direction of a link, in hand-over order.

    For a segment of `size` bytes handed over at `now`:
    `done = max(link_free, now) + size / bytes_per_second`, `link_free = done`, and
    `arrival = max(done + delay + uniform(-jitter, +jitter), done, previous arrival)`.
    So a busy link queues back-to-back writes, delay and serialisation add up like on a real link, and
    jitter never reorders bytes.
    """

    def __init__(self, shape: DirectionShape, rng: random.Random, *, not_before: float = -math.inf) -> None:
        self.shape = shape
        self._rng = rng
        self._delay = shape.delay_ms / 1000.0
        self._jitter = shape.jitter_ms / 1000.0
        self._bytes_per_second = None if shape.bandwidth_bps is None else shape.bandwidth_bps / 8.0
        self._link_free = not_before
        """Also the earliest time anything may start; `not_before` lets a connection hold its first bytes
        (the emulated TCP handshake)."""
        self._last_arrival = -math.inf

    @property
    def segment_bytes(self) -> int | None:
        """The largest piece one segment carries, or None: do not split (no bandwidth limit)."""
        if self._bytes_per_second is None:
            return None
        size = int(self._bytes_per_second * SEGMENT_SECONDS)
        return max(MIN_SEGMENT_BYTES, min(MAX_SEGMENT_BYTES, size))

    def send(self, size: int, now: float) -> float:
        """Hands `size` bytes (0 for a marker such as EOF) to the link at `now`; returns their arrival."""
        start = max(self._link_free, now)
        done = start if self._bytes_per_second is None else start + size / self._bytes_per_second
        self._link_free = done
        arrival = done + self._delay
        if self._jitter > 0:
            arrival += self._rng.uniform(-self._jitter, self._jitter)
        arrival = max(arrival, done, self._last_arrival)
        self._last_arrival = arrival
        return arrival

    def backlog_bytes(self, now: float) -> float:
        """Bytes handed over but not yet serialised at `now` (0 on an unlimited link)."""
        if self._bytes_per_second is None or self._link_free <= now:
            return 0.0
        return (self._link_free - now) * self._bytes_per_second

    def backlog_falls_to(self, backlog_bytes: float) -> float:
        """The time at which the backlog will be down to `backlog_bytes` if nothing more is handed over."""
        if self._bytes_per_second is None:
            return -math.inf
        return self._link_free - max(0.0, backlog_bytes) / self._bytes_per_second
