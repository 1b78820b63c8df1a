"""Chained item hashes and a bounded LRU of prefix boundaries, like automatic prefix caching per item.

Owns boundary identity (header hash, chain hash) and which boundaries are cached; must not render or sleep.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from hashlib import blake2b

_DIGEST = 16
_HEADER_DOMAIN = b"loopwire.sim/1\x00"


def header_hash(header_text: str) -> bytes:
    """The identity of instructions plus tools, and the first link of every chain that starts with them."""
    data = _HEADER_DOMAIN + header_text.encode("utf-8", "surrogatepass")
    return blake2b(data, digest_size=_DIGEST).digest()


def chain_hash(previous: bytes, item_text: str) -> bytes:
    """h_i = blake2b(h_{i-1} || rendered item i): equal chains mean equal rendered prefixes."""
    hasher = blake2b(previous, digest_size=_DIGEST)
    hasher.update(item_text.encode("utf-8", "surrogatepass"))
    return hasher.digest()


class PrefixCache:
    """Maps a boundary's chain hash to the number of prompt tokens whose KV state is held up to it.

    Least recently used boundaries are dropped first once `capacity` is reached.
    """

    __slots__ = ("_entries", "capacity", "hits", "misses")

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError("prefix cache capacity must be at least 1")
        self.capacity = capacity
        self._entries: OrderedDict[bytes, int] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def get(self, key: bytes) -> int | None:
        tokens = self._entries.get(key)
        if tokens is not None:
            self._entries.move_to_end(key)
        return tokens

    def put(self, key: bytes, tokens: int) -> None:
        """Record a boundary; a boundary already held with more tokens keeps its count."""
        entries = self._entries
        held = entries.get(key)
        if held is None or held < tokens:
            entries[key] = tokens
        entries.move_to_end(key)
        while len(entries) > self.capacity:
            entries.popitem(last=False)

    def longest_hit(self, keys_longest_first: Iterable[bytes]) -> int:
        """Cached tokens at the first key (longest prefix) present; 0 when none is."""
        for key in keys_longest_first:
            tokens = self.get(key)
            if tokens is not None:
                self.hits += 1
                return tokens
        self.misses += 1
        return 0

    def clear(self) -> None:
        self._entries.clear()
