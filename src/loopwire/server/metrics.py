"""Process-wide counters, gauges and histograms, rendered in the Prometheus text format at /metrics.

Owns the numbers and their exposition only; callers decide what to count. No dependency, no locks
(one event loop updates them), no per-request allocation beyond a dict lookup.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Labels = tuple[tuple[str, str], ...]


def _label_text(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{name}="{value}"' for name, value in labels)
    return "{" + inner + "}"


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def set_total(self, labels: Labels, value: float) -> None:
        """For a count kept elsewhere (e.g. by the store), copied in when /metrics is rendered."""
        self.values[labels] = value

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_label_text(labels)} {value:g}"


class Gauge(Counter):
    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_label_text(labels)} {value:g}"


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name = name
        self.help = help_text
        self.buckets = buckets
        self.counts: dict[Labels, list[int]] = {}
        self.sums: dict[Labels, float] = {}

    def observe(self, labels: Labels, value: float) -> None:
        counts = self.counts.get(labels)
        if counts is None:
            counts = self.counts[labels] = [0] * (len(self.buckets) + 1)
            self.sums[labels] = 0.0
        counts[bisect_left(self.buckets, value)] += 1
        self.sums[labels] += value

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for labels, counts in sorted(self.counts.items()):
            running = 0
            for bound, count in zip(self.buckets, counts, strict=False):
                running += count
                yield f"{self.name}_bucket{_label_text((*labels, ('le', f'{bound:g}')))} {running}"
            running += counts[-1]
            yield f"{self.name}_bucket{_label_text((*labels, ('le', '+Inf')))} {running}"
            yield f"{self.name}_sum{_label_text(labels)} {self.sums[labels]:.6f}"
            yield f"{self.name}_count{_label_text(labels)} {running}"


class Metrics:
    """Everything /metrics shows. Transport labels are "http" and "ws"."""

    def __init__(self) -> None:
        self.turns = Counter("loopwire_turns_total", "Turns by transport and outcome.")
        self.turn_seconds = Histogram("loopwire_turn_seconds", "Server time from request to terminal event.")
        self.ttft_seconds = Histogram("loopwire_ttft_seconds", "Server time from request to first output.")
        self.parents = Counter(
            "loopwire_parent_lookups_total",
            "previous_response_id resolution: connection cache hit, store hit, or not found.",
        )
        self.evictions = Counter(
            "loopwire_cache_evictions_total", "Cached responses evicted after a failure."
        )
        self.bytes_in = Counter("loopwire_bytes_received_total", "Request bytes (bodies and frames).")
        self.bytes_out = Counter(
            "loopwire_bytes_sent_total", "Event bytes sent (SSE frames, WebSocket payloads)."
        )
        self.connections = Gauge("loopwire_open_connections", "Open WebSocket connections.")
        self.lanes = Gauge("loopwire_open_lanes", "Lanes with a cached response, over open connections.")
        self.cached_bytes = Gauge("loopwire_cached_bytes", "Approximate text held by connection caches.")
        self.parked = Gauge(
            "loopwire_parked_connections", "Dropped WebSockets whose lanes are kept for reconnect grace."
        )
        self.resumed = Gauge(
            "loopwire_resumed_connections", "WebSockets that got a dropped one's lanes back."
        )
        self.store_round_trips = Counter(
            "loopwire_store_round_trips_total", "Requests this node sent to the shared (Redis) store."
        )
        self.store_up = Gauge(
            "loopwire_store_up", "1 while the shared (Redis) store answers, 0 while its breaker is open."
        )
        self.context_fits = Counter(
            "loopwire_context_fits_total",
            "Turns past the model's context window or compaction threshold: truncated, compacted, refused.",
        )
        self._all = (
            self.turns,
            self.context_fits,
            self.turn_seconds,
            self.ttft_seconds,
            self.parents,
            self.evictions,
            self.bytes_in,
            self.bytes_out,
            self.connections,
            self.store_round_trips,
            self.store_up,
            self.lanes,
            self.cached_bytes,
            self.parked,
            self.resumed,
        )

        self.engine: dict[str, Counter] = {}
        """Counters the engine keeps itself, copied in before each rendering."""

    def set_engine_count(self, name: str, help_text: str, labels: Labels, value: float) -> None:
        counter = self.engine.get(name)
        if counter is None:
            counter = self.engine[name] = Counter(name, help_text)
        counter.values[labels] = value

    def render(self) -> bytes:
        lines: list[str] = []
        for metric in self._all:
            lines.extend(metric.render())
        for counter in self.engine.values():
            lines.extend(counter.render())
        return ("\n".join(lines) + "\n").encode()


HTTP: Labels = (("transport", "http"),)
WS: Labels = (("transport", "ws"),)
