"""What a connection remembers of a finished response so the next turn sends only its delta.

Owns the cached-response record and the call-id lookup over its context; holds no lane or scheduling logic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..engines.base import RenderState
from ..protocol.context import Context
from ..protocol.items import call_id_of


@dataclass(slots=True)
class CachedResponse:
    """A response a continuation can extend: its full context (input items then output items) and the
    engine's render of exactly that context, when the engine keeps one."""

    id: str
    owner: str
    lane: str
    context: Context
    render: RenderState | None
    stored: bool
    size: int = 0
    """Approximate bytes of text the context holds (see protocol.items.approx_size), for the memory budget."""
    root: str = ""
    """The id of the conversation's root response ("" = this response is its own root): the same on every
    node, so every node sends the conversation to the same engine replica (see `conversation_root`)."""

    @property
    def root_id(self) -> str:
        return self.root or self.id


def conversation_root(parent: CachedResponse | None, response_id: str, store: bool) -> str:
    """The root id of a new response. A record stored without a link (its parent was never stored, so it
    carries the whole context) roots its chain: any node resolving it from the store sees it as the first
    record, so the connection that made it must call it the root too."""
    if parent is None or (store and not parent.stored):
        return response_id
    return parent.root_id


def missing_call_ids(context: Context, wanted: Iterable[str]) -> set[str]:
    """The call ids in `wanted` that no call item (function, custom, shell, ...) in `context` issued.
    Walks newest first and stops as soon as all are found, so the common case (answering the last turn's
    calls) is O(1) in history."""
    remaining = set(wanted)
    if not remaining:
        return remaining
    for segment in context.reversed_segments():
        for item in segment:
            call_id = call_id_of(item)
            if call_id is not None and call_id in remaining:
                remaining.discard(call_id)
                if not remaining:
                    return remaining
    return remaining
