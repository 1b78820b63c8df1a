"""An immutable conversation: items held in chained segments so continuations and forks share history.

Owns appending and walking items without copying what came before; knows nothing of engines or storage.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .items import InputItem


class Context:
    """A conversation prefix. Extending it makes a new Context; the old one stays valid (forks share it)."""

    __slots__ = ("items", "length", "parent")

    def __init__(self, parent: Context | None, items: tuple[InputItem, ...]) -> None:
        self.parent = parent
        self.items = items
        self.length: int = (parent.length if parent is not None else 0) + len(items)

    def __len__(self) -> int:
        return self.length

    def extend(self, items: Sequence[InputItem]) -> Context:
        if not items:
            return self
        return Context(self if self.length else None, tuple(items))

    def segments(self) -> list[tuple[InputItem, ...]]:
        """All segments from the oldest to this one."""
        chain: list[tuple[InputItem, ...]] = []
        node: Context | None = self
        while node is not None:
            if node.items:
                chain.append(node.items)
            node = node.parent
        chain.reverse()
        return chain

    def __iter__(self) -> Iterator[InputItem]:
        for segment in self.segments():
            yield from segment

    def items_from(self, start: int) -> list[InputItem]:
        """The items at positions >= start, walking back only as far as needed."""
        if start >= self.length:
            return []
        collected: list[tuple[InputItem, ...]] = []
        node: Context | None = self
        while node is not None and node.length > start:
            collected.append(node.items)
            node = node.parent
        collected.reverse()
        flat = [item for segment in collected for item in segment]
        return flat[len(flat) - (self.length - start) :]

    def reversed_segments(self) -> Iterator[tuple[InputItem, ...]]:
        node: Context | None = self
        while node is not None:
            yield node.items
            node = node.parent


EMPTY_CONTEXT = Context(None, ())
