"""The lanes' KV caches under one memory budget: idle caches in LRU order, evicted oldest first.

Owns a lane's render state (LocalRenderState: its ids, its render, its slot in the pool), which render
state holds which cache and the byte accounting; must not run the model or render.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..base import EngineRequest, RenderState
from .render_cache import IncrementalRenderer, Rendered, RenderedPrefix


class LocalRenderState(RenderState):
    """A lane's last turn: the token ids its KV cache was computed over (prompt plus the generated tokens
    that were fed back), its slot in the pool, and the render of its history that the next turn extends
    (`rendered`: its ids are `ids[:rendered.length]`). The cache itself lives in the pool, so the budget
    can take it away from an idle lane; `token_count` is the length of `ids`."""

    __slots__ = ("__weakref__", "ids", "rendered", "slot")

    def __init__(self, ids: tuple[int, ...], slot: int, rendered: RenderedPrefix | None = None) -> None:
        super().__init__(len(ids))
        self.ids = ids
        self.slot = slot
        self.rendered = rendered

    def __repr__(self) -> str:
        return f"LocalRenderState(token_count={self.token_count}, slot={self.slot})"


def render_lane(renderer: IncrementalRenderer, request: EngineRequest, *, count: bool = True) -> Rendered:
    """The prompt's token ids (the conversation through the template, with the generation prompt when the
    turn generates): the lane's cached render (its LocalRenderState) extended by the new items when it can
    be, else the whole conversation."""
    parent = request.prefix if isinstance(request.prefix, LocalRenderState) else None
    return renderer.render(
        request.history,
        request.instructions,
        request.tools,
        generate=request.generate,
        parent=parent.rendered if parent is not None else None,
        parent_ids=parent.ids if parent is not None else (),
        count=count,
    )


@dataclass(slots=True)
class KvEntry:
    cache: Any
    """A transformers Cache over `state.ids[:length]`."""
    length: int
    nbytes: int


@dataclass(slots=True)
class PoolStats:
    stored: int = 0
    taken: int = 0
    missed: int = 0
    evicted: int = 0
    refused: int = 0
    """Caches larger than the whole budget, never kept."""


class KvPool:
    """Idle caches by slot, least recently used first, within `max_bytes`. A turn takes its parent's cache
    out (so no two turns ever extend one cache) and puts its own back when it finishes; a state the core
    drops (lane advanced, connection closed) releases its cache through a weakref finalizer. The worker
    thread takes and puts; finalizers run on whichever thread drops the state, hence the lock."""

    def __init__(self, max_bytes: int, measure: Callable[[Any], int]) -> None:
        self.max_bytes = max_bytes
        self.total = 0
        self.stats = PoolStats()
        self._measure = measure
        self._entries: OrderedDict[int, KvEntry] = OrderedDict()
        self._next_slot = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def new_state(self, ids: tuple[int, ...], rendered: RenderedPrefix | None = None) -> LocalRenderState:
        with self._lock:
            self._next_slot += 1
            slot = self._next_slot
        state = LocalRenderState(ids, slot, rendered)
        weakref.finalize(state, self._release, slot)
        return state

    def holds(self, state: LocalRenderState) -> bool:
        with self._lock:
            return state.slot in self._entries

    def take(self, state: LocalRenderState) -> KvEntry | None:
        """The state's cache, removed from the pool; None when it was evicted or is in use."""
        with self._lock:
            entry = self._entries.pop(state.slot, None)
            if entry is None:
                self.stats.missed += 1
                return None
            self.total -= entry.nbytes
            self.stats.taken += 1
            return entry

    def put(self, state: LocalRenderState, cache: Any, length: int) -> list[int]:
        """Keep `cache` (valid over `state.ids[:length]`) as the newest idle entry and evict the least
        recently used others past the budget; returns the evicted slots. A cache larger than the whole
        budget is dropped at once."""
        nbytes = self._measure(cache)
        evicted: list[int] = []
        with self._lock:
            if nbytes > self.max_bytes:
                self.stats.refused += 1
                return evicted
            previous = self._entries.pop(state.slot, None)
            if previous is not None:
                self.total -= previous.nbytes
            self._entries[state.slot] = KvEntry(cache, length, nbytes)
            self.total += nbytes
            self.stats.stored += 1
            while self.total > self.max_bytes:
                slot, old = self._entries.popitem(last=False)
                self.total -= old.nbytes
                self.stats.evicted += 1
                evicted.append(slot)
        return evicted

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.total = 0

    def _release(self, slot: int) -> None:
        with self._lock:
            entry = self._entries.pop(slot, None)
            if entry is not None:
                self.total -= entry.nbytes
