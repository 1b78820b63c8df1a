"""What one benchmark run measures: engine speeds, link profiles, rollout lengths, transport variants.

Owns the named presets and the order cells and variants are run in; must not start or measure anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

from ..client import TransportName
from ..netem import PROFILES


@dataclass(frozen=True, slots=True)
class Speed:
    """The sim engine's latency model: decode rate, the prefill rate that goes with it, and a fixed
    time to first token (queueing and scheduling on a real server)."""

    name: str
    decode_tps: float
    prefill_tps: float
    ttft_ms: float

    def server_args(self) -> list[str]:
        return [
            f"--sim-decode-tps={self.decode_tps:g}",
            f"--sim-prefill-tps={self.prefill_tps:g}",
            f"--sim-ttft-ms={self.ttft_ms:g}",
        ]


SPEEDS: dict[str, Speed] = {
    "65": Speed("65", decode_tps=65, prefill_tps=2_000, ttft_ms=150),
    "1000": Speed("1000", decode_tps=1_000, prefill_tps=20_000, ttft_ms=15),
    "4000": Speed("4000", decode_tps=4_000, prefill_tps=80_000, ttft_ms=5),
    "instant": Speed("instant", decode_tps=0, prefill_tps=0, ttft_ms=0),
}
"""Prefill is 20-30x decode, as on GPU servers; uncached tokens only (the sim's prefix cache is on)."""


@dataclass(frozen=True, slots=True)
class Variant:
    """A way of running the agent: the client transport plus the knobs that change what crosses the link."""

    name: str
    transport: TransportName
    keepalive: bool = True
    deflate: bool = False
    batch: int = 1
    store: bool | None = None

    @property
    def store_flag(self) -> bool:
        if self.store is not None:
            return self.store
        return self.transport == "http-chained"


VARIANTS: dict[str, Variant] = {
    "http-full": Variant("http-full", "http-full"),
    "http-chained": Variant("http-chained", "http-chained"),
    "ws": Variant("ws", "ws", store=False),
    "ws-stored": Variant("ws-stored", "ws", store=True),
    "http-full-close": Variant("http-full-close", "http-full", keepalive=False),
    "ws-deflate": Variant("ws-deflate", "ws", store=False, deflate=True),
    "ws-batch": Variant("ws-batch", "ws", store=False, batch=3),
    "http-full-batch": Variant("http-full-batch", "http-full", batch=3),
}
CORE_VARIANTS = ("http-full", "http-chained", "ws")
EXTRA_VARIANTS = ("http-full-close", "ws-deflate", "ws-batch", "http-full-batch")
"""Measured once, in one cell (see Plan.extras_cell), rather than across the whole grid."""


@dataclass(frozen=True, slots=True)
class Cell:
    profile: str
    speed: str
    calls: int

    @property
    def label(self) -> str:
        return f"{self.profile}/{self.speed}tps/{self.calls}calls"


Run = tuple[Cell, int, tuple[str, ...]]
"""(cell, repeat, variants in the order to run them)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """The grid: every (profile, speed, calls) cell runs `variants` `repeats` times, the variants in a
    rotating order per repeat so that no transport always runs first (or last) in a warm server."""

    profiles: tuple[str, ...]
    speeds: tuple[str, ...]
    calls: tuple[int, ...]
    variants: tuple[str, ...] = CORE_VARIANTS
    repeats: int = 1
    extras: tuple[str, ...] = ()
    extras_cell: Cell | None = None
    file_kb: int = 0
    """Commentary added to each module of the fixture (KiB): reads bring back that much more history."""

    def __post_init__(self) -> None:
        for profile in self.profiles:
            if profile not in PROFILES:
                raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
        for speed in self.speeds:
            if speed not in SPEEDS:
                raise ValueError(f"unknown speed {speed!r}; known: {', '.join(SPEEDS)}")
        for name in (*self.variants, *self.extras):
            if name not in VARIANTS:
                raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        if any(calls < 5 for calls in self.calls):
            raise ValueError("a rollout makes at least 5 tool calls (explore 0 + 5)")
        if self.repeats < 1:
            raise ValueError("repeats must be at least 1")
        if self.file_kb < 0:
            raise ValueError("file_kb must not be negative")
        if self.extras and self.extras_cell is None:
            raise ValueError("extra variants need the cell they run in")

    def cells(self) -> list[Cell]:
        return [Cell(p, s, c) for s, p, c in product(self.speeds, self.profiles, self.calls)]

    def runs(self) -> list[Run]:
        """Every run, grouped by speed (one server per speed)."""
        planned: list[Run] = []
        for cell in self.cells():
            names = self.variants
            if cell == self.extras_cell:
                names = names + tuple(name for name in self.extras if name not in names)
            for repeat in range(self.repeats):
                shift = repeat % len(names)
                planned.append((cell, repeat, names[shift:] + names[:shift]))
        return planned

    @property
    def rollouts(self) -> int:
        return sum(len(names) for _, _, names in self.runs())


def quick_plan() -> Plan:
    """Under a minute on a 2-core machine: a fast engine (4,000 tok/s) and a 50-call rollout on loopback,
    where the transports tie, and on the mobile link, where resending the history costs."""
    return Plan(profiles=("loopback", "mobile"), speeds=("4000",), calls=(50,))


def full_plan(repeats: int = 2) -> Plan:
    return Plan(
        profiles=("loopback", "lan", "wan", "mobile"),
        speeds=("65", "1000", "4000"),
        calls=(5, 20, 50),
        repeats=repeats,
        extras=EXTRA_VARIANTS,
        extras_cell=Cell("wan", "1000", 20),
    )
