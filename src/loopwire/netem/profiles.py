"""Link shapes: what one direction of a link does to bytes (delay, jitter, bandwidth, queue); named profiles.

Owns the numbers and their validation only; it must not schedule, read or write anything.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Direction = Literal["up", "down"]
"""`up` is client to server (from the side that connects to the emulator to the target); `down` back."""

DIRECTIONS: tuple[Direction, Direction] = ("up", "down")

MBIT = 1_000_000
GBIT = 1_000_000_000


@dataclass(frozen=True, slots=True)
class DirectionShape:
    """What one direction of a link does to the bytes crossing it.

    Arrival of a segment handed to the link at `now`: the link serialises one segment at a time, so
    `done = max(link free, now) + size / bandwidth`, then `arrival = done + delay_ms (+ jitter)`, clamped so
    that no segment arrives before the one sent ahead of it (TCP is in order).
    """

    delay_ms: float = 0.0
    """One-way propagation delay."""
    jitter_ms: float = 0.0
    """Each segment's delay varies uniformly in [delay - jitter, delay + jitter] (never below zero, never
    reordering; clamping to keep the order can only add delay)."""
    bandwidth_bps: float | None = None
    """Bits per second the link serialises; None means unlimited (no serialisation delay)."""
    queue_limit_bytes: int | None = None
    """Bytes allowed to wait for serialisation. The emulator cannot drop bytes of a TCP stream, so at the
    limit it stops reading from the sender instead (the sender's own socket buffers then fill, and TCP flow
    control slows it down). None: bounded only by the emulator's per-direction memory cap."""

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError("delay_ms and jitter_ms must be >= 0")
        if self.bandwidth_bps is not None and self.bandwidth_bps <= 0:
            raise ValueError("bandwidth_bps must be > 0 (or None for unlimited)")
        if self.queue_limit_bytes is not None and self.queue_limit_bytes <= 0:
            raise ValueError("queue_limit_bytes must be > 0 (or None)")
        if self.queue_limit_bytes is not None and self.bandwidth_bps is None:
            raise ValueError("queue_limit_bytes needs a bandwidth_bps: without one nothing ever queues")

    @property
    def shaped(self) -> bool:
        return self.delay_ms > 0 or self.jitter_ms > 0 or self.bandwidth_bps is not None


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """A named pair of direction shapes."""

    name: str
    up: DirectionShape
    down: DirectionShape

    @property
    def rtt_ms(self) -> float:
        """The round-trip propagation delay, without serialisation or jitter."""
        return self.up.delay_ms + self.down.delay_ms

    def shape(self, direction: Direction) -> DirectionShape:
        return self.up if direction == "up" else self.down

    def with_changes(
        self,
        *,
        rtt_ms: float | None = None,
        jitter_ms: float | None = None,
        up_bps: float | None = None,
        down_bps: float | None = None,
        queue_limit_bytes: int | None = None,
        name: str | None = None,
    ) -> LinkProfile:
        """A copy with some settings overridden (the RTT is split evenly between the directions)."""
        up, down = self.up, self.down
        if rtt_ms is not None:
            up, down = replace(up, delay_ms=rtt_ms / 2), replace(down, delay_ms=rtt_ms / 2)
        if jitter_ms is not None:
            up, down = replace(up, jitter_ms=jitter_ms), replace(down, jitter_ms=jitter_ms)
        if up_bps is not None:
            up = replace(up, bandwidth_bps=up_bps)
        if down_bps is not None:
            down = replace(down, bandwidth_bps=down_bps)
        if queue_limit_bytes is not None:
            up = replace(up, queue_limit_bytes=queue_limit_bytes)
            down = replace(down, queue_limit_bytes=queue_limit_bytes)
        return LinkProfile(name or self.name, up, down)

    def describe(self) -> str:
        def one(shape: DirectionShape) -> str:
            rate = "unlimited" if shape.bandwidth_bps is None else f"{shape.bandwidth_bps / MBIT:g} Mbit/s"
            text = f"{shape.delay_ms:g} ms, {rate}"
            if shape.jitter_ms:
                text += f", jitter {shape.jitter_ms:g} ms"
            if shape.queue_limit_bytes is not None:
                text += f", queue {shape.queue_limit_bytes} B"
            return text

        return f"{self.name}: RTT {self.rtt_ms:g} ms; up {one(self.up)}; down {one(self.down)}"


def symmetric(name: str, rtt_ms: float, bandwidth_bps: float | None) -> LinkProfile:
    shape = DirectionShape(delay_ms=rtt_ms / 2, bandwidth_bps=bandwidth_bps)
    return LinkProfile(name, shape, shape)


PROFILES: dict[str, LinkProfile] = {
    "loopback": LinkProfile("loopback", DirectionShape(), DirectionShape()),
    "lan": symmetric("lan", 1.0, 1 * GBIT),
    "wan": LinkProfile(
        "wan",
        up=DirectionShape(delay_ms=20.0, bandwidth_bps=20 * MBIT),
        down=DirectionShape(delay_ms=20.0, bandwidth_bps=100 * MBIT),
    ),
    "mobile": LinkProfile(
        "mobile",
        up=DirectionShape(delay_ms=50.0, bandwidth_bps=5 * MBIT),
        down=DirectionShape(delay_ms=50.0, bandwidth_bps=20 * MBIT),
    ),
}
"""Named profiles. None has jitter, so runs are comparable; add it with `with_changes(jitter_ms=...)`."""


def resolve_profile(profile: LinkProfile | str) -> LinkProfile:
    if isinstance(profile, LinkProfile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown link profile {profile!r}; known: {', '.join(PROFILES)}") from None
