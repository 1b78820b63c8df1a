"""The opaque token that names a lane to an upstream, and the sticky table that gives each lane one of an
upstream's numbered slots, so the upstream can keep the lane on one cache.

Owns turning a lane's cache key (which names its owner) into a stable token that reveals nothing, and
which slot a token keeps; must not decide where the token goes (a body field, a header: each gateway
engine's settings say) or talk to the upstream.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from hashlib import blake2b


def affinity_token(cache_key: str) -> str:
    """The opaque, stable form of a lane's cache key that goes upstream (the raw key names the owner)."""
    return blake2b(cache_key.encode("utf-8"), digest_size=16).hexdigest()


class SlotTable:
    """Lanes onto an upstream's `slots` numbered caches (llama-server's `id_slot`): a lane keeps its slot,
    and a lane seen for the first time takes the least recently used slot. A hash of the key modulo the
    slot count would put two of two interleaved lanes on one slot half of the time, each then evicting
    the other's KV every turn; the table never does while lanes <= slots. It remembers one lane per slot."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("a slot table needs at least one slot")
        self.slots = slots
        self._lanes: dict[str, int] = {}
        self._owners: OrderedDict[int, str | None] = OrderedDict.fromkeys(range(slots))
        """Each slot's lane token, least recently used slot first."""
        self._lock = threading.Lock()

    def slot(self, cache_key: str) -> int:
        """The lane's slot. A new lane takes the least recently used slot, whose previous lane is forgotten
        (its KV is about to be overwritten: its next turn takes a slot anew, like a new lane)."""
        token = affinity_token(cache_key)
        with self._lock:
            slot = self._lanes.get(token)
            if slot is None:
                slot, previous = next(iter(self._owners.items()))
                if previous is not None:
                    del self._lanes[previous]
                self._lanes[token] = slot
                self._owners[slot] = token
            self._owners.move_to_end(slot)
            return slot
