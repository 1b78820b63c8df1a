"""Deadline timers for deliveries, and the correction that centres their error on zero.

Owns the timer handle and the learned early-firing bias; it must not decide what is delivered or when it
is due (the pipe computes deadlines, this only wakes the pipe near them).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]

MAX_BIAS_S = 0.002
MIN_BIAS_S = -0.001
BIAS_GAIN = 0.05
ERROR_CLIP_S = 0.002


@dataclass(frozen=True, slots=True)
class TimerStats:
    """How far from their deadlines timed deliveries happened (positive = late)."""

    count: int
    mean_error_ms: float
    mean_abs_error_ms: float
    max_late_ms: float
    max_early_ms: float
    bias_ms: float


class TimerCalibration:
    """The event loop wakes timers with ~1 ms granularity (the selector loop rounds its poll timeout up
    to whole milliseconds, uvloop rounds delays to the nearest millisecond), so a timer armed for a
    deadline fires ~0.2-0.9 ms late on average. This learns that average lateness from every timed
    delivery and arms timers that much early, so the mean error is ~0 and single deliveries are within
    about +-0.5 ms. Below one tick the same feedback dithers: a 0.5 ms delay is delivered at once or one
    tick later, in proportions that make its mean right. The bias may go negative (arm late) because
    uvloop would otherwise turn every wait under 0.5 ms into "now". A fixed `bias_s` turns the learning
    off (0: never deliver early, at ~0.2-0.9 ms mean lateness per delivery).
    """

    def __init__(self, bias_s: float | None = None) -> None:
        self._learning = bias_s is None
        self.bias = 0.0005 if bias_s is None else bias_s
        self._count = 0
        self._sum = 0.0
        self._sum_abs = 0.0
        self._max_late = 0.0
        self._max_early = 0.0

    def observe(self, error_s: float) -> None:
        """Records one timed delivery that happened `error_s` after its deadline."""
        self._count += 1
        self._sum += error_s
        self._sum_abs += abs(error_s)
        self._max_late = max(self._max_late, error_s)
        self._max_early = max(self._max_early, -error_s)
        if self._learning:
            clipped = max(-ERROR_CLIP_S, min(ERROR_CLIP_S, error_s))
            self.bias = max(MIN_BIAS_S, min(MAX_BIAS_S, self.bias + BIAS_GAIN * clipped))

    @property
    def early(self) -> float:
        """How far ahead of its deadline a delivery may go now (never negative: a due delivery is never
        held back, only timers are armed late when the bias is negative)."""
        return max(0.0, self.bias)

    def stats(self) -> TimerStats:
        count = max(1, self._count)
        return TimerStats(
            count=self._count,
            mean_error_ms=1000 * self._sum / count,
            mean_abs_error_ms=1000 * self._sum_abs / count,
            max_late_ms=1000 * self._max_late,
            max_early_ms=1000 * self._max_early,
            bias_ms=1000 * self.bias,
        )


class DeadlineTimer:
    """One re-armable timer that calls back near a deadline on `clock` (time.monotonic by default).

    Deadlines are absolute, computed from when the bytes were read, so time spent between reading and
    arming is not added again (no drift from `sleep(delay)`-style relative waits).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        clock: Clock,
        calibration: TimerCalibration,
        callback: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._clock = clock
        self._calibration = calibration
        self._callback = callback
        self._handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self.deadline = math.inf

    @property
    def armed(self) -> bool:
        return self._handle is not None

    def arm(self, deadline: float) -> None:
        """Calls back once, about `deadline` (replacing any earlier arming)."""
        self.cancel()
        self.deadline = deadline
        wait = deadline - self._clock() - self._calibration.bias
        if wait <= 0:
            self._handle = self._loop.call_soon(self._fire)
        else:
            # the loop's own clock can differ from `clock` in resolution (uvloop: whole ms), so convert
            # a remaining duration, read just now, into the loop's time base
            self._handle = self._loop.call_at(self._loop.time() + wait, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.deadline = math.inf

    def _fire(self) -> None:
        self._handle = None
        self._callback()
