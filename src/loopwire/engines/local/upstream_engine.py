"""The local engine's token-id upstream mode (`--engine local --model FILE.gguf --upstream URL`): the
prompt side runs here, the model in a llama.cpp `llama-server` serving the same file.

Each turn's prompt is the lane's cached token ids extended by the new items' ids (render_cache), sent as
ids to the server's `/completion` (completion.py) on the lane's own slot with `cache_prompt`, so nothing
re-templates or re-tokenizes the history, here or there, and the slot's KV stays warm for the lane. A
forced tool call ends the prompt with the Hermes `<tool_call>` opening (as the template writes it) and
hands the server the call's JSON schema; a json_schema text format goes as the server's `json_schema`
(with tools offered and tool_choice "auto", the model then answers in the schema: the server takes one
schema, not a union). The output is parsed as the in-process model's is (tool_parser). Owns this bridge:
the render on a worker thread, the slot, the request, the deltas, usage and the render state. Must not
load weights (only the tokenizer and chat template: model_files) nor know the wire.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from itertools import count

from ..base import EngineCount, EngineDelta, EngineError, EngineRequest, Finished, StopReason, Usage
from ..common.affinity import SlotTable
from ..common.tool_names import CallRestorer, ChatToolNames
from .call_opening import CallOpenings
from .completion import CompletionUpstream, ServerProps, completion_body
from .constrain import CALL_CLOSE, calls_schema, forced_tools, text_schema
from .kv_pool import LocalRenderState, render_lane
from .model_files import ModelFiles, load_files
from .render_cache import IncrementalRenderer, Rendered
from .settings import LocalSettings
from .template import Template
from .tool_parser import ToolCallParser


class LocalUpstreamEngine:
    """Loads the tokenizer at construction and asks the server for its slots on the first turn."""

    def __init__(self, settings: LocalSettings, files: ModelFiles | None = None) -> None:
        self.settings = settings
        self.files = files if files is not None else load_files(settings.model, settings.gguf_cache or None)
        self.context_window = self.files.max_positions
        """The model's; once the server answered, the context of one of its slots."""
        self.template = Template(self.files.tokenizer)
        self.renderer = IncrementalRenderer(self.template, enabled=settings.render_cache)
        self.renderer.warm()
        self.upstream = CompletionUpstream(settings)
        self.openings = CallOpenings(self.template)
        self._opening_ids: dict[str, list[int]] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loopwire-render")
        self._slots: SlotTable | None = None
        self._props: asyncio.Task[ServerProps] | None = None
        self._states = count(1)
        self._closed = False
        self.render_ms: list[float] = []
        """Render and tokenize time of each turn, newest last, at most 1024 (for the benchmark)."""

    def rendered(self, request: EngineRequest, *, count: bool = True) -> Rendered:
        """The prompt's token ids: the lane's cached render extended by the new items, else a full render
        (KV reuse then compares these ids with the lane's cached ones)."""
        return render_lane(self.renderer, request, count=count)

    def count_tokens(self, request: EngineRequest) -> int:
        return len(self.rendered(request, count=False).prompt)

    def counters(self) -> list[EngineCount]:
        return self.renderer.counters()

    async def aclose(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        await self.upstream.aclose()

    async def slot_table(self) -> SlotTable:
        """The server's slots, asked once (a failed ask is asked again on the next turn)."""
        if self._slots is None:
            if self._props is None or (self._props.done() and self._props.exception() is not None):
                self._props = asyncio.ensure_future(self.upstream.props())
            props = await asyncio.shield(self._props)
            if self._slots is None:
                self._slots = SlotTable(props.slots)
                if props.slot_context is not None:
                    self.context_window = props.slot_context
        return self._slots

    def call_opening(self, request: EngineRequest) -> tuple[str, list[int]]:
        """The forced call's opening as the template writes it (call_opening), and its ids: the prompt
        of a forced call ends with it, so the next turn's render of the call extends the slot's ids."""
        text = self.openings.text(request.tools)
        ids = self._opening_ids.get(text)
        if ids is None:
            ids = self._opening_ids[text] = self.template.encode(text)
        return text, ids

    async def stream(self, request: EngineRequest) -> AsyncGenerator[list[EngineDelta], None]:
        if self._closed:
            raise EngineError("the local engine is closed")
        started = time.perf_counter()
        slots = await self.slot_table()
        forced = forced_tools(request) if request.generate else None
        try:
            rendered = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.rendered, request
            )
        except EngineError:
            raise
        except RuntimeError:
            raise EngineError("the local engine is closed") from None
        except Exception as error:
            raise EngineError(f"cannot render the conversation for the local model: {error}") from None
        render_ms = (time.perf_counter() - started) * 1000.0
        self.render_ms.append(render_ms)
        del self.render_ms[:-1024]
        names = ChatToolNames(request.tools)
        opening, opening_ids = self.call_opening(request) if forced is not None else ("", [])
        prompt = rendered.prompt + opening_ids
        schema = calls_schema(forced, names) if forced is not None else text_schema(request)
        settings = self.settings
        if not request.generate:  # a warm-up: the slot prefills the prompt (n_predict 0), nothing streams
            schema = None
        body = completion_body(
            prompt,
            slot=slots.slot(request.cache_key) if request.cache_key else -1,
            max_tokens=(request.max_output_tokens or settings.max_output_tokens) if request.generate else 0,
            temperature=settings.temperature if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            seed=settings.seed,
            schema=schema,
        )
        parser = ToolCallParser(enabled=bool(request.tools) and request.tool_choice != "none")
        restorer = CallRestorer(names)
        output: list[int] = []
        timings = {"render_ms": render_ms}
        stop: StopReason = "stop"
        usage = Usage(input_tokens=len(prompt))
        if forced is not None:
            parser.feed(opening)  # the prompt opened the call: it streams once its JSON is closed
        async with aclosing(self.upstream.stream(body)) as chunks:  # closed early: the server stops
            async for chunk in chunks:
                if not request.generate:
                    if chunk.stop and chunk.timings is not None:
                        usage.cached_tokens = chunk.timings.cache_n or 0
                    continue
                output.extend(chunk.tokens)
                if chunk.content:
                    if "ttft_ms" not in timings:
                        timings["ttft_ms"] = (time.perf_counter() - started) * 1000.0
                    deltas = parser.feed(chunk.content)
                    if deltas:
                        yield restorer.restore(deltas)
                if chunk.stop:
                    if chunk.stop_type == "limit" or chunk.truncated:
                        stop = "length"
                    reported = chunk.timings
                    if reported is not None:
                        usage.cached_tokens = reported.cache_n or 0
                        if reported.prompt_ms is not None:
                            timings["prefill_ms"] = reported.prompt_ms
                    usage.output_tokens = chunk.tokens_predicted or len(output)
        tail = parser.feed(CALL_CLOSE) if forced is not None and stop != "length" else []
        tail += parser.finish()
        if stop == "stop" and parser.calls:
            stop = "tool_calls"
        timings["total_ms"] = (time.perf_counter() - started) * 1000.0
        timings.setdefault("ttft_ms", timings["total_ms"])
        state = LocalRenderState(tuple(prompt + output), next(self._states), rendered.prefix)
        yield restorer.restore([*tail, Finished(usage, stop, state, timings)])
