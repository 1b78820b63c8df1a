"""OpenAIChatEngine: one turn as one streamed request to an OpenAI-compatible chat-completions upstream.

Owns the order of a turn (translate, pick a replica, stream, retry only before output, finish); must not
keep conversation or render state: the upstream's prefix cache, reached through replica stickiness, is what
makes a long history cheap there. The one thing kept across turns is a bounded cache of encoded messages
by item identity (common/chat_messages.MessageCache), so a turn translates and encodes only its new items.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from ..base import (
    EngineDelta,
    EngineError,
    EngineRequest,
    Finished,
    NamedToolChoice,
    TextDelta,
    ToolCallStart,
    Usage,
)
from ..common.chat_messages import MessageCache
from ..common.estimate import estimate_input_tokens, plain_messages
from ..common.tool_names import CallRestorer, ChatToolNames
from ..common.upstream_errors import CODE as OVERFLOW
from .chunks import ChunkParser
from .dialect import plan_turn, probe_body
from .settings import OpenAIChatSettings
from .translate import build_body, build_headers, build_messages, build_tools, encode_body
from .upstream import Replica, UpstreamFailure, UpstreamPool

log = logging.getLogger("loopwire.engine.openai_chat")


@dataclass(slots=True)
class OpenAIChatStats:
    """Counters for tests and diagnostics."""

    turns: int = 0
    requests: int = 0
    failovers: int = 0
    estimated_usage_turns: int = 0
    usage_probes: int = 0
    text_fallbacks: int = 0
    uncapped_retries: int = 0


class _ProbeUsage(msgspec.Struct):
    prompt_tokens: int


class _ProbeAnswer(msgspec.Struct):
    usage: _ProbeUsage | None = None


_decode_usage = msgspec.json.Decoder(_ProbeAnswer).decode


class OpenAIChatEngine:
    """The Engine protocol in front of vLLM, llama.cpp, Ollama, SGLang, LM Studio or any server with a
    streaming `/v1/chat/completions`. Every turn sends the whole history (the chat API has no other way);
    the per-lane cache key keeps a lane on one replica so that replica's prefix cache serves it."""

    def __init__(self, settings: OpenAIChatSettings) -> None:
        self.settings = settings
        self.model_ids = (settings.model,) if settings.model else ()
        self.accepts_any_model = settings.model is None  # the client's model name is sent on
        self.context_window = settings.context_window or None
        self.pool = UpstreamPool(settings)
        self.stats = OpenAIChatStats()
        self.message_cache: MessageCache | None = (
            MessageCache(settings.message_cache_bytes) if settings.message_cache_bytes else None
        )

    async def aclose(self) -> None:
        await self.pool.aclose()

    async def list_models(self) -> list[str]:
        """`--upstream-model` when set (every request goes to it), else what the upstream lists."""
        if self.model_ids:
            return list(self.model_ids)
        return await self.pool.models() or []

    def count_tokens(self, request: EngineRequest) -> int:
        """An estimate (common/estimate.py), not the upstream's count: the Engine protocol asks for it
        synchronously, and the upstreams offer no common way to tokenize a chat (vLLM and llama.cpp
        tokenize differently, Ollama not at all). Raising instead would fail `/input_tokens` outright, so
        content the upstream could not take (the turn itself would fail on it) is counted as plain text."""
        try:
            messages = build_messages(request.history, request.instructions, self.settings)
        except EngineError:
            messages = plain_messages(request.history, request.instructions)
        return estimate_input_tokens(messages, build_tools(request.tools))

    async def count_input_tokens(self, request: EngineRequest) -> int:
        """`/input_tokens`: under the llama-cpp-python dialect, the server's own count (the same probe a
        streamed turn's usage comes from); otherwise, and when the probe fails, the estimate."""
        if self.settings.dialect != "llama-cpp-python":
            return self.count_tokens(request)
        try:
            body = plan_turn(build_body(request, self.settings), request, self.settings).body
        except EngineError:
            return self.count_tokens(request)
        replica = self.pool.candidates(request.cache_key)[0]
        counted = await self._count_prompt(replica, body, build_headers(request, self.settings))
        return counted if counted is not None else self.count_tokens(request)

    async def stream(self, request: EngineRequest) -> AsyncGenerator[list[EngineDelta], None]:
        started = time.perf_counter()
        self.stats.turns += 1
        body = build_body(request, self.settings, self.message_cache)

        def estimate() -> int:  # rarely needed: the messages in `body` may be encoded ones
            messages = build_messages(request.history, request.instructions, self.settings)
            return estimate_input_tokens(messages, body.get("tools", ()))

        if not request.generate:  # warmup: nothing to sample, and no render state to prepare here
            timings = {"total_ms": (time.perf_counter() - started) * 1000.0}
            yield [Finished(Usage(input_tokens=estimate()), "stop", None, timings)]
            return

        plan = plan_turn(body, request, self.settings)
        headers = build_headers(request, self.settings)
        capped = request.max_output_tokens is None and bool(self.settings.default_max_output_tokens)

        def run(body: dict[str, Any], probe: bool) -> AsyncGenerator[list[EngineDelta], None]:
            return self._run_within_context(body, probe, capped, request, headers, estimate, started)

        if plan.text_fallback is None:
            async for batch in run(plan.body, plan.probe):
                yield batch
            return
        # a non-streamed first answer: held until it is known not to be llama-cpp-python's empty message
        held = [batch async for batch in run(plan.body, False)]
        if any(isinstance(delta, ToolCallStart | TextDelta) for batch in held for delta in batch):
            for batch in held:
                yield batch
            return
        self.stats.text_fallbacks += 1
        async for batch in run(plan.text_fallback, True):
            yield batch

    async def _run_within_context(
        self,
        body: dict[str, Any],
        probe: bool,
        capped: bool,
        request: EngineRequest,
        headers: dict[str, str],
        estimate: Callable[[], int],
        started: float,
    ) -> AsyncGenerator[list[EngineDelta], None]:
        """_run, and when the upstream refused (HTTP 400) a request that carried the default output cap
        (not the client's), once more without it: vLLM and OpenAI refuse a limit that would not fit the
        context after the prompt, where their own default (what is left of the context) is bounded."""
        try:
            async for batch in self._run(body, probe, request, headers, estimate, started):
                yield batch
            return
        except UpstreamFailure as failure:  # a refusal comes before any output: nothing was yielded
            if not capped or failure.status != 400 or failure.code == OVERFLOW:
                raise
            log.info("the upstream refused the default output cap (%s); sending no limit", failure)
        self.stats.uncapped_retries += 1
        uncapped = {name: value for name, value in body.items() if name != self.settings.max_tokens_field}
        async for batch in self._run(uncapped, probe, request, headers, estimate, started):
            yield batch

    async def _run(
        self,
        body: dict[str, Any],
        probe: bool,
        request: EngineRequest,
        headers: dict[str, str],
        estimate: Callable[[], int],
        started: float,
    ) -> AsyncGenerator[list[EngineDelta], None]:
        """One upstream request, on the first replica that takes it (failing over only before output):
        batches of deltas, the last one ending with Finished."""
        encoded = encode_body(body)
        forced = request.tool_choice == "required" or isinstance(request.tool_choice, NamedToolChoice)
        last_failure: UpstreamFailure | None = None
        for replica in self.pool.candidates(request.cache_key):
            if last_failure is not None:
                self.stats.failovers += 1
            self.stats.requests += 1
            try:
                upstream = await self.pool.open(replica, encoded, headers)
            except UpstreamFailure as failure:
                self.pool.report(replica, failure)
                if not failure.retryable:
                    raise
                last_failure = failure
                continue
            produced = called = False
            restorer = CallRestorer(ChatToolNames(request.tools))
            try:
                parser = ChunkParser()
                first_delta_at: float | None = None
                if not upstream.streaming:  # not streamed: asked so (a dialect), or `stream: true` ignored
                    batch = restorer.restore(parser.feed_completion(await upstream.read_all()))
                while upstream.streaming:
                    data = await upstream.read()
                    if not data:
                        if not upstream.got_bytes:
                            upstream.abort()
                            await self._explain_empty_stream(replica, body, headers)
                            raise UpstreamFailure(
                                f"{replica.label} answered HTTP 200 with an empty stream (llama-cpp-python "
                                "does so when the generation fails after it started, e.g. a streamed "
                                "tool_choice auto: use --engine-option dialect=llama-cpp-python)",
                                code="upstream_error",
                                retryable=False,
                                replica_down=False,
                            )
                        batch = restorer.restore(parser.close())
                        if not parser.complete:
                            raise UpstreamFailure(
                                f"{replica.label} closed the stream before the turn finished",
                                code="upstream_error",
                                retryable=True,
                                replica_down=True,
                            )
                        break
                    batch = restorer.restore(parser.feed(data))  # what one network read completed
                    if parser.done:
                        await upstream.drain()  # so the connection is reused by the next turn
                        break
                    if batch:
                        if first_delta_at is None:
                            first_delta_at = time.perf_counter()
                        produced = True
                        called = called or any(isinstance(delta, ToolCallStart) for delta in batch)
                        yield batch
                batch += restorer.flush()
                finished = parser.finish(estimate)
                called = called or any(isinstance(delta, ToolCallStart) for delta in batch)
                if forced and not called:
                    raise EngineError(
                        f"{replica.label} answered without a tool call although tool_choice forced one: it "
                        "ignored the tools (llama-cpp-python needs --chat_format chatml-function-calling; "
                        "llama.cpp's llama-server --jinja and a template with tool support)",
                        code="upstream_error",
                    )
                self.pool.report_success(replica)
                if parser.usage_estimated and probe:
                    counted = await self._count_prompt(replica, body, headers)
                    if counted is not None:
                        finished.usage = Usage(input_tokens=counted, output_tokens=parser.output_chunks)
                        parser.usage_estimated = False
                if parser.usage_estimated:
                    self.stats.estimated_usage_turns += 1
                    log.debug("the upstream reported no usage for this turn; it is estimated")
                now = time.perf_counter()
                if first_delta_at is None and batch:
                    first_delta_at = now
                finished.timings["ttft_ms"] = ((first_delta_at or now) - started) * 1000.0
                finished.timings["total_ms"] = (now - started) * 1000.0
                batch.append(finished)
                yield batch
                return
            except UpstreamFailure as failure:
                self.pool.report(replica, failure)
                if produced or not failure.retryable:
                    raise
                last_failure = failure
            finally:
                upstream.close()
        assert last_failure is not None
        replicas = len(self.pool.replicas)
        if replicas == 1:
            raise last_failure
        raise EngineError(
            f"none of the {replicas} upstream replicas could serve the turn; last: {last_failure}",
            code=last_failure.code,
        )

    async def _explain_empty_stream(
        self, replica: Replica, body: dict[str, Any], headers: dict[str, str]
    ) -> None:
        """After an empty HTTP 200 stream, the same prompt once non-streamed (one token): llama-cpp-python
        streams nothing for a prompt past its context, but refuses it non-streamed with a 400 saying so.
        Raises that refusal when it is a context overflow; else returns (the empty stream is the error)."""
        try:
            upstream = await self.pool.open(replica, encode_body(probe_body(body, self.settings)), headers)
        except UpstreamFailure as failure:
            if failure.code == OVERFLOW:
                raise
            return
        upstream.close()

    async def _count_prompt(
        self, replica: Replica, body: dict[str, Any], headers: dict[str, str]
    ) -> int | None:
        """The upstream's own prompt count, from a one-token non-streamed request for the same prompt
        (dialect.probe_body); None when that fails (the turn keeps its estimate)."""
        self.stats.usage_probes += 1
        try:
            upstream = await self.pool.open(replica, encode_body(probe_body(body, self.settings)), headers)
            try:
                answer = await upstream.read_all()
            finally:
                upstream.close()
            counted = _decode_usage(answer).usage
        except (UpstreamFailure, msgspec.DecodeError, msgspec.ValidationError) as error:
            log.warning("the prompt count probe failed; usage stays estimated: %s", error)
            return None
        return counted.prompt_tokens if counted is not None else None
