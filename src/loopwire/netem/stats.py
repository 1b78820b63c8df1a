"""Counters of one proxied connection, per direction, and the emulator-wide totals.

Owns the counter records and their copying; it must not change any of them itself (the pipe and the
connection count, this module only defines what is counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .profiles import Direction


@dataclass(slots=True)
class DirectionStats:
    """One direction of one connection. Live inside the emulator; the public API hands out copies."""

    bytes: int = 0
    """Bytes passed: handed to the receiving side (a cut after N bytes leaves exactly N here)."""
    bytes_read: int = 0
    """Bytes read from the sending side (more than `bytes` while some are still on the emulated link)."""
    chunks: int = 0
    """Reads from the sending side."""
    writes: int = 0
    """Writes to the receiving side (due segments are coalesced into one write)."""
    queue_bytes: int = 0
    """Bytes held by the emulator now: read, not yet handed over (serialising, propagating, or waiting for
    a slow receiver)."""
    max_queue_bytes: int = 0
    max_queue_segments: int = 0
    max_backlog_bytes: int = 0
    """The peak of the link's own queue: bytes waiting for serialisation (at most the queue limit). Part of
    `queue_bytes`, which also counts bytes propagating or waiting for the receiver."""
    max_receiver_buffer_bytes: int = 0
    """The peak of the receiving transport's own write buffer after a write (bounded by its high-water
    mark plus one write, because the emulator stops writing while that transport is paused)."""
    read_pauses: int = 0
    """Times reading from the sender was paused (memory cap, queue limit)."""
    eof_forwarded: bool = False

    def copy(self) -> DirectionStats:
        return replace(self)


@dataclass(slots=True)
class ConnectionStats:
    id: int
    peer: str
    """The client's address as seen by the emulator, "host:port"."""
    opened_at: float
    """time.monotonic() at accept."""
    up: DirectionStats = field(default_factory=DirectionStats)
    down: DirectionStats = field(default_factory=DirectionStats)
    closed_at: float | None = None
    close_reason: str | None = None
    """None while open; then "closed" (both directions ended with EOF), "cut" (cut(), cut_all(), a cut
    after N bytes), "reset" (a side reset or failed), "connect failed" (the target refused), or
    "shutdown" (the emulator closed)."""

    def direction(self, direction: Direction) -> DirectionStats:
        return self.up if direction == "up" else self.down

    @property
    def open(self) -> bool:
        return self.close_reason is None

    def copy(self) -> ConnectionStats:
        return replace(self, up=self.up.copy(), down=self.down.copy())


@dataclass(frozen=True, slots=True)
class LinkTotals:
    """Everything that passed through the emulator since it started, including forgotten connections."""

    connections_accepted: int
    connections_open: int
    bytes_up: int
    bytes_down: int
