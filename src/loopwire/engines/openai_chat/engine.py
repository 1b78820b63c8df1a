"""OpenAIChatEngine: one turn as one streamed request to an OpenAI-compatible chat-completions upstream.

Owns the order of a turn (translate, pick a replica, stream, retry only before output, finish); must not
keep conversation or render state: the upstream's prefix cache, reached through replica stickiness, is what
makes a long history cheap there. The one thing kept across turns is a bounded cache of encoded messages
by item identity (common/chat_messages.MessageCache), so a turn translates and encodes only its new items.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from ..base import EngineDelta, EngineError, EngineRequest, Finished, Usage
from ..common.chat_messages import MessageCache
from ..common.estimate import estimate_input_tokens, plain_messages
from ..common.tool_names import CallRestorer, ChatToolNames
from .chunks import ChunkParser
from .settings import OpenAIChatSettings
from .translate import build_body, build_headers, build_messages, build_tools, encode_body
from .upstream import UpstreamFailure, UpstreamPool

log = logging.getLogger("loopwire.engine.openai_chat")


@dataclass(slots=True)
class OpenAIChatStats:
    """Counters for tests and diagnostics."""

    turns: int = 0
    requests: int = 0
    failovers: int = 0
    estimated_usage_turns: int = 0


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

        encoded = encode_body(body)
        headers = build_headers(request, self.settings)
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
            produced = False
            restorer = CallRestorer(ChatToolNames(request.tools))
            try:
                parser = ChunkParser()
                first_delta_at: float | None = None
                if not upstream.streaming:  # a server that ignored `stream: true`
                    batch = restorer.restore(parser.feed_completion(await upstream.read_all()))
                while upstream.streaming:
                    data = await upstream.read()
                    if not data:
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
                        yield batch
                batch += restorer.flush()
                finished = parser.finish(estimate)
                self.pool.report_success(replica)
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
