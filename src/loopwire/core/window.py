"""Fitting a turn's input into the model's context window: truncation, server-side compaction, or refusal.

Owns the rule of what may leave a context (the oldest items first, in whole call/output groups; never the
instructions, system or developer messages, or the newest input: the items the model has not answered yet)
and when the server compacts
(`context_management` compaction past `compact_threshold`). Pure: the token counts come from a `measure`
the caller provides (the engine's own `count_tokens`), and it does no I/O and keeps no state.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..protocol import ids
from ..protocol.compaction import encode_summary
from ..protocol.context import Context
from ..protocol.errors import context_length_exceeded, invalid_request
from ..protocol.items import (
    Compaction,
    InputItem,
    Message,
    Reasoning,
    answered_call_id,
    approx_size,
    call_id_of,
)
from .compact import SUMMARY_HEAD_CHARS, SUMMARY_TAIL_CHARS, shorten, summary_of

Measure = Callable[[Sequence[InputItem]], int]
"""The input tokens of the turn's request with this history (instructions and tools included)."""

_PINNED_ROLES = frozenset({"system", "developer"})
_MIN_SUMMARY_CHARS = 64
TRUNCATE_TO = 0.75
"""Truncation drops down to this share of the window, not just under it: the turns after it then extend
the same kept prefix (an engine's KV or prefix cache hits) until the window fills again, instead of every
turn dropping one more item and prefilling everything anew."""


@dataclass(frozen=True, slots=True)
class WindowRule:
    """`window`: the input tokens the model can take (None: unbounded); `truncate`: `truncation: "auto"`;
    `compact_threshold`: compact once the input passes this many tokens (None: never)."""

    window: int | None
    truncate: bool = False
    compact_threshold: int | None = None


@dataclass(frozen=True, slots=True)
class Fitted:
    """The history the engine sees: `items` None when it is the context unchanged; else the kept items,
    led by `compaction` when the server compacted (that item then also opens the turn's output).
    `dropped` counts the items left out or compacted; `tokens` is the measured input."""

    items: tuple[InputItem, ...] | None
    tokens: int
    dropped: int = 0
    compaction: Compaction | None = None


def compact_threshold_of(context_management: Any) -> int | None:
    """The threshold of the request's `context_management` compaction entry; a malformed entry is a 400
    naming it. Entries of other types are newer than this server and ignored."""
    if context_management is None:
        return None
    if not isinstance(context_management, list):
        raise invalid_request("'context_management' must be an array.", param="context_management")
    threshold: int | None = None
    for index, entry in enumerate(context_management):
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise invalid_request(
                "Each 'context_management' entry must be an object with a 'type'.",
                param=f"context_management[{index}]",
            )
        if entry["type"] != "compaction":
            continue
        value = entry.get("compact_threshold")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise invalid_request(
                "'compact_threshold' must be a positive integer.",
                param=f"context_management[{index}].compact_threshold",
            )
        threshold = value
    return threshold


def cut_points(items: Sequence[InputItem], limit: int) -> list[int]:
    """Every k in 1..limit where dropping items[:k] splits no call from its output(s) and leaves no
    reasoning item without the item it precedes; ascending."""
    n = len(items)
    open_spans = [0] * (n + 2)
    issued: dict[str, int] = {}
    for position, item in enumerate(items):
        call_id = call_id_of(item)
        if call_id is not None:
            issued.setdefault(call_id, position)
        answered = answered_call_id(item)
        if answered is not None and answered in issued:
            # cutting at any k in (call, output] would split them
            open_spans[issued[answered] + 1] += 1
            open_spans[position + 1] -= 1
    cuts: list[int] = []
    depth = 0
    for k in range(1, min(limit, n) + 1):
        depth += open_spans[k]
        if depth == 0 and not isinstance(items[k - 1], Reasoning):
            cuts.append(k)
    return cuts


def _pinned(item: InputItem) -> bool:
    return isinstance(item, Message) and item.role in _PINNED_ROLES


def _kept(items: Sequence[InputItem], k: int) -> tuple[InputItem, ...]:
    """items[k:] after the system and developer messages among items[:k]."""
    return (*(item for item in items[:k] if _pinned(item)), *items[k:])


def newest_input(items: Sequence[InputItem]) -> int:
    """Where the newest input starts: the trailing items the model has not answered yet (user, system and
    developer messages, tool outputs), whether they came in this request or were resent with the whole
    history (store=false). Never before the last item, so a context is never emptied."""
    start = len(items)
    while start > 0:
        item = items[start - 1]
        if (isinstance(item, Message) and item.role != "assistant") or answered_call_id(item) is not None:
            start -= 1
        else:
            break
    return min(start, max(len(items) - 1, 0))


def fit_window(context: Context, rule: WindowRule, tokens: int, measure: Measure) -> Fitted:
    """What the engine may see of `context` (`tokens` long as it is). Compacts first when asked and past
    the threshold; then, past the window, truncates when allowed, else raises context_length_exceeded (as
    it does when even the newest input does not fit)."""
    threshold = rule.compact_threshold
    if threshold is not None and tokens > threshold:
        items = list(context)
        return _compact(items, newest_input(items), rule, measure, tokens)
    if rule.window is None or tokens <= rule.window:
        return Fitted(None, tokens)
    if not rule.truncate:
        raise context_length_exceeded(tokens, rule.window)
    items = list(context)
    return _truncate(items, newest_input(items), rule.window, measure, tokens)


def _truncate(
    items: Sequence[InputItem], new_from: int, window: int, measure: Measure, tokens: int
) -> Fitted:
    """The oldest items dropped down to TRUNCATE_TO of the window (else, when the newest input alone is
    larger than that, down to the window), the fewest that do it."""
    cuts = cut_points(items, new_from)
    if not cuts:
        raise context_length_exceeded(tokens, window, truncating=True)
    search = _CutSearch(items, cuts, measure, tokens)
    found = search.first_fit(int(window * TRUNCATE_TO))
    if found is None:
        found = search.first_fit(window)
    if found is None:
        raise context_length_exceeded(search.measured(len(cuts) - 1), window, truncating=True)
    kept, measured = found
    return Fitted(kept, measured, dropped=len(items) - len(kept))


class _CutSearch:
    """Finds the first cut whose rest measures at most a limit (fewer items never measure more) in a few
    counts, each of which renders the whole rest: the first probe is where the items' sizes say the limit
    falls, then it gallops towards the answer and bisects."""

    def __init__(self, items: Sequence[InputItem], cuts: list[int], measure: Measure, tokens: int) -> None:
        self.items, self.cuts, self.measure, self.tokens = items, cuts, measure, tokens
        self.memo: dict[int, tuple[tuple[InputItem, ...], int]] = {}
        sizes = [approx_size((item,)) for item in items]
        self.total = max(sum(sizes), 1)
        self.dropped_at: list[int] = []  # the bytes each cut drops
        running, position = 0, 0
        for cut in cuts:
            running += sum(sizes[position:cut])
            position = cut
            self.dropped_at.append(running)

    def measured(self, index: int) -> int:
        if index not in self.memo:
            kept = _kept(self.items, self.cuts[index])
            self.memo[index] = (kept, self.measure(kept))
        return self.memo[index][1]

    def first_fit(self, limit: int) -> tuple[tuple[InputItem, ...], int] | None:
        last = len(self.cuts) - 1
        if self.measured(last) > limit:
            return None
        share = max(self.tokens - limit, 0) / max(self.tokens, 1)
        guess = min(bisect_left(self.dropped_at, share * self.total), last)
        step = 1
        if self.measured(guess) <= limit:  # gallop towards the oldest cut while the rest still fits
            low, high = guess - 1, guess
            while low >= 0 and self.measured(low) <= limit:
                high, low, step = low, max(low - step * 2, -1), step * 2
        else:  # gallop towards the newest cut until it fits
            low, high = guess, min(guess + 1, last)
            while self.measured(high) > limit:
                low, high, step = high, min(high + step * 2, last), step * 2
        while high - low > 1:  # measured(low) > limit (or low is before the first cut) >= measured(high)
            middle = (low + high) // 2
            if self.measured(middle) <= limit:
                high = middle
            else:
                low = middle
        return self.memo[high]


def _compact(
    items: Sequence[InputItem], new_from: int, rule: WindowRule, measure: Measure, tokens: int
) -> Fitted:
    """Everything before the newest input (and the calls it answers) becomes one compaction item, its
    summary shortened until the result takes at most half the threshold (or, failing that, fits the
    window). System and developer messages stay as they are."""
    cuts = cut_points(items, new_from)
    if not cuts:
        if rule.window is not None and tokens > rule.window:
            raise context_length_exceeded(tokens, rule.window, truncating=True)
        return Fitted(None, tokens)
    cut = cuts[-1]
    older = items[:cut]
    pinned = tuple(item for item in older if _pinned(item))
    text = summary_of(item for item in older if not _pinned(item))
    assert rule.compact_threshold is not None
    target = rule.compact_threshold // 2
    if rule.window is not None:
        target = min(target, rule.window)
    head, tail = SUMMARY_HEAD_CHARS, SUMMARY_TAIL_CHARS
    item_id = ids.new_id("cmp")
    while True:
        compaction = Compaction(encrypted_content=encode_summary(shorten(text, head, tail)), id=item_id)
        kept = (*pinned, compaction, *items[cut:])
        measured = measure(kept)
        if measured <= target or head + tail < _MIN_SUMMARY_CHARS:
            break
        head, tail = head // 2, tail // 2
        if head + tail < _MIN_SUMMARY_CHARS:
            head = tail = 0
    if rule.window is not None and measured > rule.window:
        raise context_length_exceeded(measured, rule.window, truncating=True)
    return Fitted(kept, measured, dropped=len(older) - len(pinned), compaction=compaction)
