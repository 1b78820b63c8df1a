"""One direction of one proxied connection: timed segments between a sending and a receiving transport.

Owns that direction's queue, delivery timer, read pausing and cut-after-N-bytes budget; it must not open,
close or reset transports (it asks its connection to, through the callbacks it was given).
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable

from .profiles import Direction
from .schedule import LinkSchedule
from .stats import DirectionStats
from .timer import Clock, DeadlineTimer, TimerCalibration

READ_BYTES = 64 * 1024
"""The most one read from the sender takes (less when the memory cap or the queue limit leaves less room)."""
MAX_WRITE_BYTES = 256 * 1024
"""Due segments are coalesced into writes of at most this size; the receiver's pause is checked between."""


class Mark(enum.Enum):
    EOF = "eof"
    RESET = "reset"


Payload = bytes | memoryview | Mark


class Pipe:
    """Bytes read from `source` wait here until the link model says they arrive, then go to `sink`.

    Flow control: reading from the source pauses while the bytes held here reach `max_held_bytes` or the
    link's queue limit, and delivery pauses while the sink's transport is above its high-water mark, so
    a slow receiver backs up into the sender's socket instead of into memory.
    """

    def __init__(
        self,
        direction: Direction,
        schedule: LinkSchedule,
        *,
        loop: asyncio.AbstractEventLoop,
        clock: Clock,
        calibration: TimerCalibration,
        stats: DirectionStats,
        max_held_bytes: int,
        on_cut: Callable[[], None],
        on_eof_delivered: Callable[[], None],
        on_reset_delivered: Callable[[], None],
    ) -> None:
        self.direction = direction
        self.stats = stats
        self._schedule = schedule
        self._loop = loop
        self._clock = clock
        self._calibration = calibration
        self._max_held = max_held_bytes
        self._on_cut = on_cut
        self._on_eof_delivered = on_eof_delivered
        self._on_reset_delivered = on_reset_delivered
        self._source: asyncio.Transport | None = None
        self._sink: asyncio.Transport | None = None
        self._sink_paused = False
        self._queue: deque[tuple[float, Payload]] = deque()
        self._timer = DeadlineTimer(loop, clock, calibration, self._on_timer)
        self._resume_timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._source_done = False
        self._closed = False
        self._cut_budget: int | None = None
        self.finished = False
        """The end of the stream (EOF) has been handed to the sink."""
        limit = schedule.shape.queue_limit_bytes
        self._resume_room = max(1, min(READ_BYTES, max_held_bytes // 2, limit // 2 if limit else READ_BYTES))

    # -- wiring ---------------------------------------------------------------------------------------

    def attach_source(self, transport: asyncio.Transport) -> None:
        self._source = transport
        self._update_reading()

    def attach_sink(self, transport: asyncio.Transport) -> None:
        self._sink = transport
        self._deliver(self._clock())

    def sink_paused(self) -> None:
        self._sink_paused = True
        self._timer.cancel()

    def sink_resumed(self) -> None:
        self._sink_paused = False
        self._deliver(self._clock())

    def close(self) -> None:
        """Drops whatever is still queued and stops every timer; nothing is delivered afterwards."""
        self._closed = True
        self._timer.cancel()
        self._cancel_resume_timer()
        self._queue.clear()
        self.stats.queue_bytes = 0

    # -- input from the source ------------------------------------------------------------------------

    def read_room(self) -> int:
        """How many bytes the next read from the source may take without passing a bound."""
        room = self._max_held - self.stats.queue_bytes
        limit = self._schedule.shape.queue_limit_bytes
        if limit is not None:
            room = min(room, int(limit - self._schedule.backlog_bytes(self._clock())))
        return max(0, min(room, READ_BYTES))

    def feed(self, data: bytes) -> None:
        if self._closed or self._source_done or not data:
            return
        now = self._clock()
        stats = self.stats
        stats.chunks += 1
        stats.bytes_read += len(data)
        segment = self._schedule.segment_bytes
        if segment is None or len(data) <= segment:
            self._queue.append((self._schedule.send(len(data), now), data))
        else:
            view = memoryview(data)
            for offset in range(0, len(data), segment):
                piece = view[offset : offset + segment]
                self._queue.append((self._schedule.send(len(piece), now), piece))
        stats.queue_bytes += len(data)
        stats.max_queue_bytes = max(stats.max_queue_bytes, stats.queue_bytes)
        stats.max_queue_segments = max(stats.max_queue_segments, len(self._queue))
        backlog = self._schedule.backlog_bytes(now)
        if backlog > stats.max_backlog_bytes:
            stats.max_backlog_bytes = round(backlog)
        if not self._timer.armed:
            self._deliver_fed(now)
        self._update_reading()

    def feed_eof(self) -> None:
        """The source sent EOF: it goes down the link behind the bytes before it."""
        self._feed_mark(Mark.EOF)

    def feed_reset(self) -> None:
        """The source reset or failed: the reset goes down the link behind the bytes before it."""
        self._feed_mark(Mark.RESET)

    def _feed_mark(self, mark: Mark) -> None:
        if self._closed or self._source_done:
            return
        self._source_done = True
        self._cancel_resume_timer()
        now = self._clock()
        self._queue.append((self._schedule.send(0, now), mark))
        if not self._timer.armed:
            self._deliver_fed(now)

    def cut_after(self, n_bytes: int) -> None:
        """Asks for a cut once `n_bytes` more bytes have been handed to the sink (at once if <= 0)."""
        if n_bytes <= 0:
            self._on_cut()
            return
        self._cut_budget = n_bytes

    @property
    def source_done(self) -> bool:
        """The source has ended (EOF or reset); nothing more will be fed."""
        return self._source_done

    @property
    def done(self) -> bool:
        """Nothing more will be delivered: the EOF went through, or the pipe was closed."""
        return self.finished or self._closed

    # -- output to the sink ---------------------------------------------------------------------------

    def _on_timer(self) -> None:
        now = self._clock()
        horizon = now + self._calibration.early
        if self._queue:
            due = self._queue[0][0]
            self._calibration.observe(now - due)
            # a timer that fired counts as due even if the loop's rounding woke it a little early:
            # re-arming for a fraction of a millisecond would spin
            horizon = max(horizon, due)
        self._deliver(now, horizon)

    def _deliver_fed(self, now: float) -> None:
        """Right after a feed with no timer running: what is due within the timer bias goes now rather
        than through a timer that would fire about that much late; deciding so counts as a timed
        delivery, early by the time left (without this, a delay below the bias would always be 0 and
        the calibration would never hear of it)."""
        horizon = now + self._calibration.early
        if self._queue and not self._sink_paused and self._sink is not None:
            due = self._queue[0][0]
            if now < due <= horizon:
                self._calibration.observe(now - due)
        self._deliver(now, horizon)

    def _deliver(self, now: float, horizon: float | None = None) -> None:
        sink = self._sink
        if sink is None or self._sink_paused or self._closed:
            return
        if horizon is None:
            horizon = now + self._calibration.early
        queue = self._queue
        batch: list[bytes | memoryview] = []
        size = 0
        while queue and queue[0][0] <= horizon:
            payload = queue[0][1]
            if isinstance(payload, Mark):
                self._write(sink, batch, size, size)
                queue.popleft()
                self._deliver_mark(sink, payload)
                return
            length = len(payload)
            queue.popleft()
            if self._cut_budget is not None and length >= self._cut_budget:
                batch.append(payload[: self._cut_budget])
                self._write(sink, batch, size + self._cut_budget, size + length)
                self._cut_budget = None
                self._on_cut()
                return
            batch.append(payload)
            size += length
            if self._cut_budget is not None:
                self._cut_budget -= length
            if size >= MAX_WRITE_BYTES:
                self._write(sink, batch, size, size)
                batch, size = [], 0
                if self._sink_paused or self._closed:
                    break
        if batch:
            self._write(sink, batch, size, size)
        if self._closed:
            return
        if queue and not self._sink_paused:
            self._timer.arm(queue[0][0])
        self._update_reading()

    def _write(self, sink: asyncio.Transport, batch: list[bytes | memoryview], size: int, taken: int) -> None:
        """Writes `size` bytes of `batch` (which took `taken` bytes off the queue)."""
        stats = self.stats
        stats.queue_bytes -= taken
        if not batch:
            return
        sink.write(b"".join(batch))
        stats.bytes += size
        stats.writes += 1
        stats.max_receiver_buffer_bytes = max(stats.max_receiver_buffer_bytes, sink.get_write_buffer_size())

    def _deliver_mark(self, sink: asyncio.Transport, mark: Mark) -> None:
        if mark is Mark.RESET:
            self._on_reset_delivered()
            return
        self.stats.eof_forwarded = True
        self.finished = True
        if sink.can_write_eof():
            sink.write_eof()
        else:
            sink.close()
        self._on_eof_delivered()

    # -- read pausing ---------------------------------------------------------------------------------

    def _update_reading(self) -> None:
        source = self._source
        if source is None or self._source_done or self._closed or source.is_closing():
            return
        room = self.read_room()
        if not self._reading_paused:
            # below `_resume_room` already, not only at 0: otherwise a queue that drains continuously
            # would be read a few bytes at a time, as fast as the loop spins
            if room < self._resume_room:
                source.pause_reading()
                self._reading_paused = True
                self.stats.read_pauses += 1
                self._arm_resume_timer()
        elif room >= self._resume_room:
            self._cancel_resume_timer()
            source.resume_reading()
            self._reading_paused = False
        else:
            self._arm_resume_timer()

    def _arm_resume_timer(self) -> None:
        """The queue limit frees room by itself as the link serialises, with no event to say so: wake up
        when it will have. (Room freed by deliveries is noticed by the delivery itself.)"""
        limit = self._schedule.shape.queue_limit_bytes
        if limit is None or self._resume_timer is not None:
            return
        now = self._clock()
        if limit - self._schedule.backlog_bytes(now) >= self._resume_room:
            return  # not limited by the queue right now
        at = self._schedule.backlog_falls_to(limit - self._resume_room)
        self._resume_timer = self._loop.call_at(self._loop.time() + max(0.0, at - now), self._on_resume_timer)

    def _on_resume_timer(self) -> None:
        self._resume_timer = None
        self._update_reading()

    def _cancel_resume_timer(self) -> None:
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
