"""SimEngine: an embedded model with a real render path, an item-level prefix cache and a latency model.

Owns one turn from request to Finished (render, cache lookup, generation, pacing); must not know the wire.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Literal

from ...protocol.context import Context
from ...protocol.items import (
    CustomToolCall,
    FunctionCall,
    InputItem,
    Message,
    OutputText,
    Reasoning,
    ReasoningText,
    SummaryText,
)
from ..base import (
    EngineDelta,
    EngineError,
    EngineRequest,
    Finished,
    NamedToolChoice,
    ReasoningDelta,
    RenderState,
    StopReason,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallStart,
    ToolSpec,
    Usage,
)
from .coding_policy import scripted_policy
from .prefix_cache import PrefixCache, chain_hash, header_hash
from .renderer import GENERATION_PROMPT_TOKENS, ChatRenderer, function_call_pieces
from .schema_args import WORDS, generate_arguments, structured_answer
from .tokenizer import count_tokens, split_tokens

_REASONING_WORDS = 8
_CUSTOM_INPUT_WORDS = 6
_CALL_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_HEADER_MEMO_SIZE = 16


@dataclass(frozen=True, slots=True)
class SimSettings:
    """Latency model and behaviour. All latencies zero means no sleeping at all.

    ttft_ms: fixed time before the first token. prefill_tps: uncached prompt tokens per second (0 = instant).
    decode_tps: output tokens per second (0 = instant). default_output_tokens: natural output length of a
    text answer, end-of-turn token included. parallel_calls: calls emitted for tool_choice "required" or a
    named tool when the request allows parallel tool calls. context_window: the tokens the simulated model
    takes in, input and output together (None: unbounded); an answer stops (`length`) where it would
    overflow.
    """

    ttft_ms: float = 0.0
    prefill_tps: float = 0.0
    decode_tps: float = 0.0
    prefix_cache: bool = True
    seed: int = 0
    default_output_tokens: int = 12
    prefix_cache_entries: int = 4096
    parallel_calls: int = 1
    context_window: int | None = None

    def __post_init__(self) -> None:
        if min(self.ttft_ms, self.prefill_tps, self.decode_tps) < 0:
            raise ValueError("sim latencies and rates must not be negative")
        if self.default_output_tokens < 2:
            raise ValueError("default_output_tokens must be at least 2 (one word and the end of turn)")
        if self.prefix_cache_entries < 1 or self.parallel_calls < 1:
            raise ValueError("prefix_cache_entries and parallel_calls must be at least 1")
        if self.context_window is not None and self.context_window < 2:
            raise ValueError("context_window must be at least 2 tokens")


class SimRenderState(RenderState):
    """A rendered conversation: token count, header identity, chain hash at the end, items covered."""

    __slots__ = ("chain_hash", "header_hash", "items")

    def __init__(self, token_count: int, header_hash: bytes, chain_hash: bytes, items: int) -> None:
        super().__init__(token_count)
        self.header_hash = header_hash
        self.chain_hash = chain_hash
        self.items = items

    def __repr__(self) -> str:
        return (
            f"SimRenderState(token_count={self.token_count}, items={self.items}, "
            f"chain_hash={self.chain_hash.hex()[:12]}…)"
        )


@dataclass(slots=True)
class SimStats:
    """Counters for tests and diagnostics."""

    turns: int = 0
    fast_path_turns: int = 0
    slow_path_turns: int = 0
    history_items_rendered: int = 0
    output_items_rendered: int = 0


@dataclass(frozen=True, slots=True)
class _Header:
    instructions: str | None
    tools: tuple[ToolSpec, ...]
    tokens: int
    hash: bytes


@dataclass(slots=True)
class _Prompt:
    """The rendered history: where rendering started, the boundaries it passed, and where it ended."""

    header: _Header
    fast: bool
    start_hash: bytes
    start_tokens: int
    boundaries: list[tuple[bytes, int]]
    end_hash: bytes
    tokens: int
    items: int


@dataclass(slots=True)
class _Plan:
    """A generated answer: deltas with the output-token index each is emitted at, and the output items."""

    deltas: list[tuple[int, EngineDelta]] = field(default_factory=list)
    items: list[InputItem] = field(default_factory=list)
    output_tokens: int = 0
    stop_reason: StopReason = "stop"
    reasoning_tokens: int = 0


class SimEngine:
    """A deterministic simulated model: renders like a chat template, caches prefixes like automatic prefix
    caching (per item), and sleeps only as long as its latency model says."""

    model_ids = ("loopwire-sim",)
    accepts_any_model = True

    def __init__(self, settings: SimSettings | None = None) -> None:
        self.settings = settings if settings is not None else SimSettings()
        self.context_window = self.settings.context_window
        self.renderer = ChatRenderer()
        self.cache = PrefixCache(self.settings.prefix_cache_entries)
        self.stats = SimStats()
        self._headers: list[_Header] = []
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True
        self.cache.clear()
        self._headers.clear()

    def count_tokens(self, request: EngineRequest) -> int:
        """The input tokens `stream` would report for this request (no cache lookups, no generation)."""
        prompt = self._render_history(request)
        return prompt.tokens + (GENERATION_PROMPT_TOKENS if request.generate else 0)

    async def stream(self, request: EngineRequest) -> AsyncGenerator[list[EngineDelta], None]:
        started = time.perf_counter()
        if self._closed:
            raise EngineError("the sim engine is closed")
        settings = self.settings
        prompt = self._render_history(request)
        keys = self._lookup_keys(prompt) if settings.prefix_cache else ()
        cached = self.cache.longest_hit(keys) if settings.prefix_cache else 0
        input_tokens = prompt.tokens + (GENERATION_PROMPT_TOKENS if request.generate else 0)
        cached = min(cached, input_tokens)
        stats = self.stats
        stats.turns += 1
        stats.history_items_rendered += len(prompt.boundaries)
        if prompt.fast:
            stats.fast_path_turns += 1
        else:
            stats.slow_path_turns += 1
        reused = prompt.start_tokens if prompt.fast else 0
        timings = {
            "render_ms": (time.perf_counter() - started) * 1000.0,
            "rendered_tokens": float(prompt.tokens - reused),
            "reused_tokens": float(reused),
        }
        prefill_s = (input_tokens - cached) / settings.prefill_tps if settings.prefill_tps > 0 else 0.0
        first_at = started + prefill_s + (settings.ttft_ms / 1000.0 if request.generate else 0.0)
        step_s = 1.0 / settings.decode_tps if settings.decode_tps > 0 else 0.0
        paced = first_at > started or step_s > 0
        request = self._within_window(request, input_tokens)
        # Unpaced, every token is due at once: one delta per item instead of one per token.
        plan = self._generate(request, prompt, per_token=paced) if request.generate else None
        decode_s = step_s * (plan.output_tokens - 1) if plan is not None and plan.output_tokens else 0.0
        timings["model_ms"] = (first_at - started + decode_s) * 1000.0
        if paced:
            await _sleep_until(started + prefill_s)
        if settings.prefix_cache:  # the prompt's KV state now exists
            self._cache_history(prompt)

        if plan is None:
            timings["ttft_ms"] = (time.perf_counter() - started) * 1000.0
            state = SimRenderState(prompt.tokens, prompt.header.hash, prompt.end_hash, prompt.items)
            yield [Finished(Usage(input_tokens=input_tokens, cached_tokens=cached), "stop", state, timings)]
            return

        # Deltas that are due together leave together: at zero latency the whole turn is one batch.
        first_delta_at: float | None = None
        batch: list[EngineDelta] = []
        for index, delta in plan.deltas:
            if paced:
                due = first_at + index * step_s
                if batch and due > time.perf_counter():
                    yield batch
                    batch = []
                await _sleep_until(due)
            if first_delta_at is None:
                first_delta_at = time.perf_counter()
            batch.append(delta)
        if paced:
            end = first_at + (plan.output_tokens - 1) * step_s
            if batch and end > time.perf_counter():
                yield batch
                batch = []
            await _sleep_until(end)

        state = self._render_output(prompt, plan, input_tokens)
        finished_at = time.perf_counter()
        timings["ttft_ms"] = ((first_delta_at or finished_at) - started) * 1000.0
        timings["total_ms"] = (finished_at - started) * 1000.0
        usage = Usage(
            input_tokens=input_tokens,
            cached_tokens=cached,
            output_tokens=plan.output_tokens,
            reasoning_tokens=plan.reasoning_tokens,
        )
        batch.append(Finished(usage, plan.stop_reason, state, timings))
        yield batch

    # -- rendering ---------------------------------------------------------------------------------------

    def _header(self, instructions: str | None, tools: tuple[ToolSpec, ...]) -> _Header:
        memo = self._headers
        for header in memo:
            if header.tools is tools and header.instructions == instructions:
                return header
        for header in memo:
            if header.instructions == instructions and header.tools == tools:
                return header
        rendered = self.renderer.header(instructions, tools)
        header = _Header(instructions, tools, rendered.tokens, header_hash(rendered.text))
        memo.insert(0, header)
        del memo[_HEADER_MEMO_SIZE:]
        return header

    def _within_window(self, request: EngineRequest, input_tokens: int) -> EngineRequest:
        """An answer stops where the context window is full, as a real model's would."""
        window = self.context_window
        if window is None:
            return request
        room = max(window - input_tokens, 1)
        if request.max_output_tokens is not None and request.max_output_tokens <= room:
            return request
        return dataclasses.replace(request, max_output_tokens=room)

    def _render_history(self, request: EngineRequest) -> _Prompt:
        """Fast path: the prefix state covers history[:prefix_items] under the same header, so only the items
        after it are rendered. Slow path: everything from the header on."""
        header = self._header(request.instructions, tuple(request.tools))
        history: Context = request.history
        prefix = request.prefix
        fast = (
            isinstance(prefix, SimRenderState)
            and prefix.header_hash == header.hash
            and prefix.items == request.prefix_items
            and 0 < request.prefix_items <= history.length
        )
        if fast:
            assert isinstance(prefix, SimRenderState)
            items: Sequence[InputItem] = history.items_from(request.prefix_items)
            start_hash, start_tokens = prefix.chain_hash, prefix.token_count
        else:
            items = list(history)
            start_hash, start_tokens = header.hash, header.tokens

        render_item = self.renderer.item
        chain, tokens = start_hash, start_tokens
        boundaries: list[tuple[bytes, int]] = []
        for item in items:
            rendered = render_item(item)
            chain = chain_hash(chain, rendered.text)
            tokens += rendered.tokens
            boundaries.append((chain, tokens))
        return _Prompt(header, fast, start_hash, start_tokens, boundaries, chain, tokens, history.length)

    def _lookup_keys(self, prompt: _Prompt) -> list[bytes]:
        """Boundaries longest first. The fast path probes only the new items, the prefix end and the header:
        older boundaries of the lane are older in the LRU than the prefix end, so they are gone before it."""
        keys = [key for key, _ in reversed(prompt.boundaries)]
        if prompt.fast:
            keys.append(prompt.start_hash)
        keys.append(prompt.header.hash)
        return keys

    def _cache_history(self, prompt: _Prompt) -> None:
        put = self.cache.put
        put(prompt.header.hash, prompt.header.tokens)
        if prompt.fast:
            put(prompt.start_hash, prompt.start_tokens)
        for key, tokens in prompt.boundaries:
            put(key, tokens)

    def _render_output(self, prompt: _Prompt, plan: _Plan, input_tokens: int) -> SimRenderState:
        """Extend the chain over the output items exactly as they will render when they come back as history,
        and cache their boundaries. The last one holds only the KV that exists: without an end-of-turn token
        when the answer was cut at max_output_tokens."""
        chain, tokens = prompt.end_hash, prompt.tokens
        cache_on = self.settings.prefix_cache
        last = len(plan.items) - 1
        for position, item in enumerate(plan.items):
            rendered = self.renderer.item(item)
            chain = chain_hash(chain, rendered.text)
            tokens += rendered.tokens
            if cache_on:
                kv_tokens = input_tokens + plan.output_tokens if position == last else tokens
                self.cache.put(chain, min(tokens, kv_tokens))
        self.stats.output_items_rendered += len(plan.items)
        return SimRenderState(tokens, prompt.header.hash, chain, prompt.items + len(plan.items))

    # -- generation --------------------------------------------------------------------------------------

    def _rng(self, prompt: _Prompt) -> random.Random:
        material = self.settings.seed.to_bytes(16, "little", signed=True) + prompt.end_hash
        return random.Random(int.from_bytes(blake2b(material, digest_size=8).digest(), "little"))

    def _generate(self, request: EngineRequest, prompt: _Prompt, *, per_token: bool) -> _Plan:
        rng = self._rng(prompt)
        plan = self._answer(request, rng, per_token)
        effort = request.reasoning.get("effort") if request.reasoning else None
        if effort is not None and effort != "none":
            summary = request.reasoning.get("summary") if request.reasoning else None
            return self._with_reasoning(plan, rng, per_token, summary=summary is not None)
        return plan

    def _with_reasoning(self, plan: _Plan, rng: random.Random, per_token: bool, *, summary: bool) -> _Plan:
        """A short thought before the answer: a summary when the request asks for one, else the raw
        reasoning text (as open-weight models stream it)."""
        chosen = [rng.choice(WORDS) for _ in range(_REASONING_WORDS)]
        pieces = ["Thinking:", *(" " + word for word in chosen)]
        text = "".join(pieces)
        part: Literal["summary", "text"] = "summary" if summary else "text"
        steps = pieces if per_token else [text]
        thought: list[tuple[int, EngineDelta]] = [
            (index, ReasoningDelta(piece, part)) for index, piece in enumerate(steps)
        ]
        shift = len(pieces)
        item = Reasoning(
            summary=[SummaryText(text=text)] if summary else [],
            content=None if summary else [ReasoningText(text=text)],
        )
        plan.deltas = thought + [(position + shift, delta) for position, delta in plan.deltas]
        plan.items.insert(0, item)
        plan.output_tokens += shift
        plan.reasoning_tokens = shift
        return plan

    def _answer(self, request: EngineRequest, rng: random.Random, per_token: bool) -> _Plan:
        choice = request.tool_choice
        tools = request.tools
        # The scripted "model" of loopwire.agent's coding task (a simulation), when the metadata asks for it.
        policy = scripted_policy(request.metadata) if request.metadata and choice != "none" else None
        if policy is not None:
            decision = policy.decide(request.history, parallel=request.parallel_tool_calls)
            if isinstance(decision, str):
                return self._text(request, rng, per_token, decision)
            return self._calls(
                len(decision), lambda n: (decision[n].name, decision[n].arguments, None), rng, per_token
            )
        if isinstance(choice, NamedToolChoice):
            named = next((t for t in tools if t.name == choice.name and t.kind == choice.kind), None)
            if named is None:
                raise EngineError(f"tool_choice names {choice.name!r}, which is not among the tools")
            return self._tool_calls(request, [named], rng, per_token)
        if choice == "required" and tools:
            return self._tool_calls(request, list(tools), rng, per_token)
        if request.text_format is not None:
            return self._text(request, rng, per_token, structured_answer(request.text_format, rng))
        return self._text(request, rng, per_token)

    def _text(
        self, request: EngineRequest, rng: random.Random, per_token: bool, text: str | None = None
    ) -> _Plan:
        """Random words, or the tokens of `text` when a scripted policy wrote the answer."""
        scripted = split_tokens(text) if text else None
        words = len(scripted) if scripted else self.settings.default_output_tokens - 1  # plus end of turn
        limit = request.max_output_tokens
        plan = _Plan()
        if limit is not None and limit <= words:
            words, plan.stop_reason = max(limit, 1), "length"
        if scripted:
            pieces = scripted[:words]
        else:
            chosen = [rng.choice(WORDS) for _ in range(words)]
            pieces = [chosen[0], *(" " + word for word in chosen[1:])]
        if per_token:
            plan.deltas = [(index, TextDelta(piece)) for index, piece in enumerate(pieces)]
        else:
            plan.deltas = [(0, TextDelta("".join(pieces)))]
        plan.items = [Message(role="assistant", content=[OutputText(text="".join(pieces))])]
        # each word is one token; a complete answer also generates <|im_end|>, a cut one does not
        plan.output_tokens = words + (1 if plan.stop_reason == "stop" else 0)
        return plan

    def _tool_calls(
        self, request: EngineRequest, candidates: list[ToolSpec], rng: random.Random, per_token: bool
    ) -> _Plan:
        calls = self.settings.parallel_calls if request.parallel_tool_calls else 1

        def pick(_: int) -> tuple[str, str, ToolSpec]:
            tool = rng.choice(candidates)
            if tool.kind == "custom":
                return tool.name, " ".join(rng.choice(WORDS) for _ in range(_CUSTOM_INPUT_WORDS)), tool
            arguments = json.dumps(generate_arguments(tool.parameters, rng), ensure_ascii=False)
            return tool.name, arguments, tool

        return self._calls(calls, pick, rng, per_token)

    def _calls(
        self,
        calls: int,
        pick: Callable[[int], tuple[str, str, ToolSpec | None]],
        rng: random.Random,
        per_token: bool,
    ) -> _Plan:
        """The plan emitting `calls` tool calls, the n-th named and argued by `pick(n)` (a custom tool's
        arguments are its free-text input)."""
        plan = _Plan(stop_reason="tool_calls")
        position = 0  # output tokens generated so far
        for number in range(calls):
            name, arguments, tool = pick(number)
            kind = tool.kind if tool is not None else "function"
            namespace = tool.namespace if tool is not None else None
            call_id = "call_" + "".join(rng.choices(_CALL_ID_ALPHABET, k=24))
            prompt_piece, head, args, tail, end = function_call_pieces(name, arguments)
            if number:  # the first call's "<|im_start|>assistant\n" is the prompt's generation prompt
                position += count_tokens(prompt_piece)
            position += count_tokens(head)
            start = ToolCallStart(call_id=call_id, name=name, kind=kind, namespace=namespace)
            plan.deltas.append((position - 1, start))
            if per_token:
                for token in split_tokens(args):
                    plan.deltas.append((position, ToolArgumentsDelta(token)))
                    position += 1
            else:
                plan.deltas.append((position, ToolArgumentsDelta(args)))
                position += count_tokens(args)
            position += count_tokens(tail) + count_tokens(end)
            if kind == "custom":
                plan.items.append(
                    CustomToolCall(call_id=call_id, name=name, input=arguments, namespace=namespace)
                )
            else:
                plan.items.append(
                    FunctionCall(call_id=call_id, name=name, arguments=arguments, namespace=namespace)
                )
        plan.output_tokens = position
        return plan


async def _sleep_until(deadline: float) -> None:
    """Sleep until perf_counter() reaches `deadline`; returns at once (without yielding) when it has."""
    delay = deadline - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
        delay = deadline - time.perf_counter()  # the loop may wake up to a clock tick early
        if delay > 0:
            await asyncio.sleep(delay)
