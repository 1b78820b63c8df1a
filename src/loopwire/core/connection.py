"""One connection's state: its lanes, their FIFO queues, the in-flight cap and the response cache.

Sans-I/O and generic over the job type the transport queues; it decides what may start, never runs it.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any, Generic, Protocol, TypeVar

from ..protocol.errors import ProtocolError
from .cache import CachedResponse
from .limits import Limits

DEFAULT_LANE = ""
_STREAM_ID = re.compile(r"[A-Za-z0-9_.\-]+")

Job = TypeVar("Job")


class CacheAccount(Protocol):
    """Told of every cached response that leaves a connection's cache (the memory budget)."""

    def discard(self, conn: ConnectionState[Any], cached: CachedResponse) -> None: ...


class _Lane:
    __slots__ = ("latest", "running")

    def __init__(self) -> None:
        self.latest: CachedResponse | None = None
        self.running = False


def validate_stream_id(stream_id: str, limits: Limits) -> None:
    if not 1 <= len(stream_id) <= limits.max_stream_id_length or not _STREAM_ID.fullmatch(stream_id):
        raise ProtocolError(
            400,
            f"Invalid stream_id: it must be 1-{limits.max_stream_id_length} characters of "
            "letters, digits, '_', '.' or '-'.",
            code="invalid_stream_id",
            param="stream_id",
        )


class ConnectionState(Generic[Job]):
    """Lanes run one response at a time in arrival order; different lanes run concurrently up to
    `max_in_flight`. Each lane remembers only its latest response: an older id of a lane is a miss."""

    def __init__(
        self, limits: Limits, *, opened_at: float, owner: str = "", account: CacheAccount | None = None
    ) -> None:
        self.limits = limits
        self.opened_at = opened_at
        self.owner = owner
        self.account = account
        self.in_flight = 0
        self.queued_bytes = 0
        self._lanes: dict[str, _Lane] = {}
        self._by_id: dict[str, CachedResponse] = {}
        self._waiting: deque[tuple[str, Job, int]] = deque()

    # -- scheduling ---------------------------------------------------------------------------------

    def check_age(self, now: float) -> ProtocolError | None:
        """The age-limit error once the connection is as old as `max_connection_age_s`, else None."""
        if now - self.opened_at < self.limits.max_connection_age_s:
            return None
        return self.age_limit_error()

    def age_limit_error(self) -> ProtocolError:
        return ProtocolError(
            400,
            f"This connection has reached its maximum age of {self.limits.max_connection_age_s:g} seconds; "
            "open a new connection and continue from a stored response or resend the full input.",
            code="websocket_connection_limit_reached",
        )

    def submit(self, lane: str, job: Job, size: int = 0) -> list[tuple[str, Job]]:
        """Queue a job of `size` bytes on its lane; returns the jobs that may start now (possibly this
        one)."""
        if lane != DEFAULT_LANE:
            validate_stream_id(lane, self.limits)
        if len(self._waiting) >= self.limits.max_queued:
            raise ProtocolError(
                429,
                f"Too many queued responses on this connection (limit {self.limits.max_queued}); "
                "wait for earlier responses to finish.",
                type="rate_limit_error",
                code="too_many_queued_responses",
            )
        if self.queued_bytes + size > self.limits.max_queued_bytes:
            raise ProtocolError(
                429,
                f"The responses queued on this connection would hold more than "
                f"{self.limits.max_queued_bytes} bytes; wait for earlier responses to start.",
                type="rate_limit_error",
                code="too_many_queued_responses",
            )
        if lane not in self._lanes:
            named = len(self._lanes) - (DEFAULT_LANE in self._lanes)
            if lane != DEFAULT_LANE and named >= self.limits.max_named_lanes:
                raise ProtocolError(
                    400,
                    f"This connection already uses {self.limits.max_named_lanes} stream_id lanes, the most "
                    "it may; reuse a lane or open another connection.",
                    code="websocket_stream_limit_reached",
                    param="stream_id",
                )
            self._lanes[lane] = _Lane()
        self._waiting.append((lane, job, size))
        self.queued_bytes += size
        return self._start_ready()

    def finish(self, lane: str) -> list[tuple[str, Job]]:
        """The lane's running job ended (any outcome); returns the jobs that may start now."""
        state = self._lanes.get(lane)
        if state is not None and state.running:
            state.running = False
            self.in_flight -= 1
        return self._start_ready()

    def _start_ready(self) -> list[tuple[str, Job]]:
        ready: list[tuple[str, Job]] = []
        if not self._waiting or self.in_flight >= self.limits.max_in_flight:
            return ready
        kept: deque[tuple[str, Job, int]] = deque()
        while self._waiting:
            lane, job, size = self._waiting.popleft()
            state = self._lanes[lane]
            if state.running or self.in_flight >= self.limits.max_in_flight:
                kept.append((lane, job, size))
                continue
            state.running = True
            self.in_flight += 1
            self.queued_bytes -= size
            ready.append((lane, job))
        self._waiting = kept
        return ready

    def replace_queued(self, lane: str, old: Job, new: Job) -> bool:
        """Swap a job still waiting for its turn (a transport annotating it); False when it has started."""
        for index, (waiting_lane, job, size) in enumerate(self._waiting):
            if waiting_lane == lane and job is old:
                self._waiting[index] = (lane, new, size)
                return True
        return False

    def is_running(self, lane: str) -> bool:
        state = self._lanes.get(lane)
        return state is not None and state.running

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def lane_count(self) -> int:
        return len(self._lanes)

    # -- the connection-local cache -----------------------------------------------------------------

    def lookup(self, response_id: str) -> CachedResponse | None:
        cached = self._by_id.get(response_id)
        if cached is None or cached.owner != self.owner:
            return None
        return cached

    def commit(self, cached: CachedResponse) -> None:
        """Make `cached` its lane's latest response, replacing (and forgetting) the previous one."""
        state = self._lanes.get(cached.lane)
        if state is None:
            state = self._lanes[cached.lane] = _Lane()
        if state.latest is not None:
            self._drop(state.latest)
        state.latest = cached
        self._by_id[cached.id] = cached

    def evict(self, response_id: str) -> None:
        cached = self._by_id.get(response_id)
        if cached is not None:
            self._drop(cached)

    def _drop(self, cached: CachedResponse) -> None:
        """The one way a response leaves the cache (replaced by its lane's next, evicted after a failure or
        for the budget, or the connection closing): the account forgets it at once, and the engine's render
        state is released when its last reference goes (engines/base.py, RenderState)."""
        del self._by_id[cached.id]
        state = self._lanes.get(cached.lane)
        if state is not None and state.latest is cached:
            state.latest = None
        if self.account is not None:
            self.account.discard(self, cached)

    def evict_after_failure(self, parent_id: str | None, lane: str) -> bool:
        """A failed continuation evicts its parent, unless it was a fork from another lane. True when it
        evicted something."""
        if parent_id is None:
            return False
        cached = self._by_id.get(parent_id)
        if cached is None or cached.lane != lane:
            return False
        self.evict(parent_id)
        return True

    def clear(self) -> None:
        for cached in list(self._by_id.values()):
            self._drop(cached)
        self._lanes.clear()
        self.release_jobs()

    def release_jobs(self) -> None:
        """The socket is gone and its turns cancelled, but its caches may be kept (reconnect grace): forget
        the queued jobs and the running marks, keep every lane's latest response."""
        self._waiting.clear()
        self.in_flight = 0
        self.queued_bytes = 0
        for lane in self._lanes.values():
            lane.running = False

    @property
    def cached_count(self) -> int:
        return len(self._by_id)
