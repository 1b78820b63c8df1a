"""One turn on the model, on the worker thread: reuse or rebuild the KV cache, prefill, decode, stream.

Owns the prefill/decode loop, KV reuse (extend, crop to the common prefix, or start over) and the turn's
usage; must not touch the event loop, render templates or parse the wire.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..base import EngineDelta, EngineError, Finished, StopReason, Usage
from .constrain import Constraint
from .decoding import Detokenizer, Sampler
from .kv_pool import KvPool, LocalRenderState
from .loader import LoadedModel, new_cache
from .render_cache import RenderedPrefix
from .tool_parser import ToolCallParser

Emit = Callable[[list[EngineDelta] | EngineError], None]
"""Hands a batch of deltas, or the error that ends the turn, to the event loop."""


class Cancelled(Exception):
    """The consumer went away; the turn stops at the next chunk or token."""


@dataclass(slots=True)
class TurnJob:
    prompt: list[int]
    parent: LocalRenderState | None
    generate: bool
    max_new_tokens: int
    temperature: float
    top_p: float
    parse_tools: bool
    cancelled: threading.Event
    emit: Emit
    render_ms: float = 0.0
    rendered: RenderedPrefix | None = None
    constraint: Constraint | None = None
    """The grammar every sampled token must follow (a forced tool call, a JSON schema), if any."""
    """The render of the history that the next turn of the lane extends (its ids prefix `prompt`)."""


@dataclass(slots=True)
class GenerationStats:
    """Counters for tests and the benchmark: what the last turn reused and prefilled, and how reuse went."""

    turns: int = 0
    prefilled_tokens: int = 0
    reused_tokens: int = 0
    last_prefilled: int = 0
    last_reused: int = 0
    extended: int = 0
    """Turns whose prompt extended the parent's cached ids: only the new tokens were prefilled."""
    cropped: int = 0
    """Turns that kept the longest common prefix of a cache that diverged from the prompt."""
    full: int = 0
    """Turns with no usable cache: a first turn, no render state, an evicted lane or nothing in common."""
    forward_passes: int = 0
    """Model forward passes, prefill chunks and decode steps together."""
    drafted: int = 0
    """Tokens a grammar forced (in the tokenizer's spelling, not sampled), fed with the token before."""
    draft_kept: int = 0
    """Of those, the ones output (a stop or the token cap leaves the rest unused, dropped from the KV)."""
    history: list[tuple[int, int]] = field(default_factory=list)
    """(reused, prefilled) per turn, newest last, at most 1024."""


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    limit = min(len(a), len(b))
    if limit == 0:
        return 0
    if a[limit - 1] == b[limit - 1] and list(a[:limit]) == list(b[:limit]):
        return limit
    low, high = 0, limit  # binary search over slice equality: C-speed comparisons, O(n log n) worst case
    while low < high:
        middle = (low + high + 1) // 2
        if list(a[:middle]) == list(b[:middle]):
            low = middle
        else:
            high = middle - 1
    return low


class Generator:
    """Runs TurnJobs one at a time (the caller guarantees it: one worker thread)."""

    def __init__(
        self,
        loaded: LoadedModel,
        pool: KvPool,
        *,
        kv_reuse: bool,
        chunk: int,
        seed: int,
        jump_forward: bool = True,
    ) -> None:
        self.loaded = loaded
        self.pool = pool
        self.kv_reuse = kv_reuse
        self.chunk = chunk
        self.jump_forward = jump_forward
        self.new_cache: Callable[[LoadedModel], Any] = new_cache
        """Makes a lane's empty KV cache (a benchmark swaps in transformers' DynamicCache to compare)."""
        self.sampler = Sampler(seed)
        self.stats = GenerationStats()
        self.stop_ids: frozenset[int] = frozenset()

    def run(self, job: TurnJob) -> None:
        """Streams the turn through `job.emit`, ending with Finished; errors become an EngineError batch."""
        try:
            with torch.inference_mode():
                self._run(job)
        except Cancelled:
            return
        except EngineError as error:
            job.emit(error)
        except Exception as error:  # a model failure must fail the turn, not the worker
            job.emit(EngineError(f"the local model failed: {type(error).__name__}: {error}"))

    def _forward(self, ids: Sequence[int], cache: Any, keep: int = 1) -> Any:
        """The logits after each of the last `keep` of `ids` (rows); all their KV goes into `cache`."""
        loaded = self.loaded
        self.stats.forward_passes += 1
        tensor = torch.tensor([list(ids)], dtype=torch.long, device=loaded.device)
        kwargs = {loaded.cache_kwarg: cache, "use_cache": True, "logits_to_keep": keep}
        return loaded.model(input_ids=tensor, **kwargs).logits[0]

    def _feed(self, ids: Sequence[int], cache: Any) -> list[Any]:
        """The logits after each of `ids`, their KV into `cache`: in one forward pass with jump_forward,
        else one pass per token (the same rows, for benchmarks)."""
        if self.jump_forward:
            return list(self._forward(ids, cache, len(ids)))
        return [self._forward((token,), cache)[-1] for token in ids]

    def _draft(self, job: TurnJob, cache: Any, limit: int) -> list[int]:
        """The tokens the turn's grammar forces next, in the tokenizer's own spelling (none without a
        grammar, or with a cache that cannot drop the ones a stop leaves unused)."""
        if job.constraint is None or not getattr(cache, "is_croppable", True):
            return []
        draft = job.constraint.forced_tokens(limit)
        self.stats.drafted += len(draft)
        return draft

    def _reuse(self, job: TurnJob) -> tuple[Any, int, Any | None]:
        """(cache to extend, tokens reused, the parent's entry when it was taken)."""
        parent = job.parent
        if not self.kv_reuse or parent is None:
            return self.new_cache(self.loaded), 0, None
        entry = self.pool.take(parent)
        if entry is None:
            return self.new_cache(self.loaded), 0, None
        prompt = job.prompt
        keep = common_prefix(parent.ids[: entry.length], prompt)
        if job.generate:
            keep = min(keep, len(prompt) - 1)  # the last prompt token is fed to get the first logits
        croppable = getattr(entry.cache, "is_croppable", True)
        if keep <= 0 or (keep < entry.length and not croppable):
            return self.new_cache(self.loaded), 0, None
        if keep < entry.length:
            entry.cache.crop(keep - entry.length)
        return entry.cache, keep, entry

    def _run(self, job: TurnJob) -> None:
        started = time.perf_counter()
        prompt = job.prompt
        limit = self.loaded.max_positions
        if limit is not None and len(prompt) + (1 if job.generate else 0) > limit:
            raise EngineError(
                f"the prompt has {len(prompt)} tokens; this model takes at most {limit}",
                code="context_length_exceeded",
            )
        cache, reused, taken = self._reuse(job)
        room = job.max_new_tokens if limit is None else min(job.max_new_tokens, limit - len(prompt))
        # Tokens a grammar forces from its start ride along with the prompt's last chunk (see _decode_loop).
        draft = self._draft(job, cache, room - 1) if job.generate else []
        sequence = [*prompt, *draft] if self.jump_forward else list(prompt)
        try:
            rows: list[Any] = []
            for start in range(reused, len(sequence), self.chunk):
                if job.cancelled.is_set():
                    raise Cancelled
                end = min(start + self.chunk, len(sequence))
                keep = min(end - start, max(1, end - len(prompt) + 1))
                logits = self._forward(sequence[start:end], cache, keep)
                rows = [*rows, *logits] if start >= len(prompt) else list(logits)  # draft-only chunk
            if not self.jump_forward and draft:
                rows = [*rows[-1:], *self._feed(draft, cache)]
        except BaseException:
            self._give_back(job.parent, taken, cache, reused)
            raise
        prefilled = len(prompt) - reused
        self._count(reused, prefilled, job, taken)
        timings = {"render_ms": job.render_ms, "prefill_ms": (time.perf_counter() - started) * 1000.0}
        fed = list(prompt)
        output: list[int] = []
        stop: StopReason = "stop"
        parser = ToolCallParser(enabled=job.parse_tools)
        if job.generate and rows:
            detok = Detokenizer(self._decode)
            try:
                stop = self._decode_loop(
                    job, cache, rows, draft, room, (fed, output), parser, detok, started, timings
                )
            except BaseException:
                self._give_back(job.parent, taken, cache, reused)
                raise
            tail = parser.feed(detok.flush()) + parser.finish()
        else:
            tail = []
        excess = cache.get_seq_length() - len(fed)
        if excess > 0:  # draft tokens never verified (the turn stopped first)
            cache.crop(-excess)
        if stop == "stop" and parser.calls:
            stop = "tool_calls"
        state = self.pool.new_state(tuple(fed), job.rendered)
        if self.kv_reuse:
            self.pool.put(state, cache, len(fed))
        timings["total_ms"] = (time.perf_counter() - started) * 1000.0
        timings.setdefault("ttft_ms", timings["total_ms"])
        usage = Usage(input_tokens=len(prompt), cached_tokens=reused, output_tokens=len(output))
        job.emit([*tail, Finished(usage, stop, state, timings)])

    def _decode_loop(
        self,
        job: TurnJob,
        cache: Any,
        rows: list[Any],
        expected: list[int],
        room: int,
        tokens: tuple[list[int], list[int]],
        parser: ToolCallParser,
        detok: Detokenizer,
        started: float,
        timings: dict[str, float],
    ) -> StopReason:
        """Samples up to `room` tokens, streaming them, and feeds each back. Where the grammar allows exactly
        one text next (a forced call's `<tool_call>\n{"name": "f", "arguments": {"`), its tokens are not
        sampled: they are `expected`, in the tokenizer's own spelling, so the lane's KV holds the very ids
        the next turn's render of the call starts with (a model picking among the spellings the grammar
        allows, `n`+`ame` for `name`, would make that turn re-prefill the whole call). `rows[i]` are the
        logits after `fed` and `expected[:i]`, whose KV is in the cache: the run costs one forward pass
        with jump_forward. `tokens` is (fed, output), appended to."""
        fed, output = tokens
        position = 0
        for step in range(room):
            forced = position < len(expected)
            if forced:
                token = expected[position]
                position += 1
            else:
                logits = rows[position]
                if job.constraint is not None:
                    logits = job.constraint.mask(logits)
                token = self.sampler.pick(logits, job.temperature, job.top_p)
            if job.constraint is not None:
                job.constraint.accept(token)
            output.append(token)
            if step == 0:
                timings["ttft_ms"] = (time.perf_counter() - started) * 1000.0
            if token in self.stop_ids:
                return "stop"
            deltas = parser.feed(detok.push(token))
            if deltas:
                job.emit(deltas)
            if step == room - 1:
                return "length"
            if job.cancelled.is_set():
                raise Cancelled
            fed.append(token)
            if forced:  # its KV is in the cache already
                self.stats.draft_kept += 1
                continue
            expected = self._draft(job, cache, room - step - 1)
            rows = self._feed((token, *expected), cache)
            position = 0
        return "length"

    def _decode(self, ids: Sequence[int]) -> str:
        return str(self.loaded.tokenizer.decode(list(ids), skip_special_tokens=True))

    def _give_back(self, parent: LocalRenderState | None, taken: Any | None, cache: Any, reused: int) -> None:
        """A turn that does not finish hands its parent the cache back, cropped to what they share, so the
        lane's retry (or another fork) still finds it."""
        if parent is None or taken is None or reused <= 0:
            return
        length = cache.get_seq_length()
        if length > reused:
            if not getattr(cache, "is_croppable", True):
                return
            cache.crop(reused - length)
        self.pool.put(parent, cache, reused)

    def _count(self, reused: int, prefilled: int, job: TurnJob, taken: Any | None) -> None:
        stats = self.stats
        stats.turns += 1
        stats.prefilled_tokens += prefilled
        stats.reused_tokens += reused
        stats.last_prefilled, stats.last_reused = prefilled, reused
        if reused == 0:
            stats.full += 1
        elif (
            job.parent is not None and taken is not None and reused >= min(taken.length, len(job.prompt) - 1)
        ):
            stats.extended += 1
        else:
            stats.cropped += 1
        stats.history.append((reused, prefilled))
        del stats.history[:-1024]
