"""LocalEngine: an in-process transformers model behind the Engine protocol, one turn at a time.

Owns the bridge between the event loop and the worker thread (streaming, cancellation) and turning a
request into a job; must not know the wire or run model code on the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor

from ..base import EngineCount, EngineDelta, EngineError, EngineRequest, Finished
from ..common.tool_names import CallRestorer, ChatToolNames
from .call_opening import CallOpenings
from .constrain import Grammars
from .generation import Emit, GenerationStats, Generator, TurnJob
from .kv_pool import KvPool, LocalRenderState, render_lane
from .loader import LoadedModel, cache_bytes, load
from .render_cache import IncrementalRenderer, Rendered
from .settings import LocalSettings
from .template import Template


class LocalEngine:
    """Loads the model at construction. Turns queue on one worker thread (a CPU runs one well); each
    streams its tokens back as they are decoded, and stops when its consumer closes the stream."""

    def __init__(self, settings: LocalSettings, loaded: LoadedModel | None = None) -> None:
        self.settings = settings
        self.loaded = loaded if loaded is not None else load(settings)
        self.context_window = self.loaded.max_positions
        self.template = Template(self.loaded.tokenizer)
        self.renderer = IncrementalRenderer(self.template, enabled=settings.render_cache)
        self.renderer.warm()
        self.pool = KvPool(settings.kv_budget_bytes, cache_bytes)
        self.generator = Generator(
            self.loaded,
            self.pool,
            kv_reuse=settings.kv_reuse,
            chunk=settings.prefill_chunk_tokens,
            seed=settings.seed,
            jump_forward=settings.jump_forward,
        )
        self.generator.stop_ids = self.template.stop_ids(self.loaded.eos_ids)
        vocab_size = getattr(self.loaded.config, "vocab_size", None) or len(self.loaded.tokenizer)
        self.grammars = Grammars(
            self.loaded.tokenizer, int(vocab_size), self.generator.stop_ids, CallOpenings(self.template)
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loopwire-local")
        self._closed = False

    @property
    def stats(self) -> GenerationStats:
        return self.generator.stats

    def render(self, request: EngineRequest) -> list[int]:
        """The prompt's token ids, as the turn would prefill them (not counted in the render counters)."""
        return self.rendered(request, count=False).prompt

    def rendered(self, request: EngineRequest, *, count: bool = True) -> Rendered:
        """The prompt's token ids: the lane's cached render extended by the new items, else a full render
        (KV reuse then compares these ids with the lane's cached ones)."""
        return render_lane(self.renderer, request, count=count)

    def counters(self) -> list[EngineCount]:
        return self.renderer.counters()

    def count_tokens(self, request: EngineRequest) -> int:
        return len(self.render(request))

    async def aclose(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.pool.clear()

    async def stream(self, request: EngineRequest) -> AsyncGenerator[list[EngineDelta], None]:
        if self._closed:
            raise EngineError("the local engine is closed")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[EngineDelta] | EngineError] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: list[EngineDelta] | EngineError) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                cancelled.set()

        def work() -> None:
            if cancelled.is_set():
                return
            try:
                started = time.perf_counter()
                job = self._job(request, cancelled, emit)
                job.render_ms = (time.perf_counter() - started) * 1000.0
            except EngineError as error:
                emit(error)
                return
            except Exception as error:
                emit(EngineError(f"cannot render the conversation for the local model: {error}"))
                return
            self.generator.run(job)

        try:
            self._executor.submit(work)
        except RuntimeError:
            raise EngineError("the local engine is closed") from None
        restorer = CallRestorer(ChatToolNames(request.tools))
        try:
            while True:
                batch = await _gather(queue)
                if isinstance(batch, EngineError):
                    raise batch
                batch = restorer.restore(batch)  # Finished, last, flushes a custom tool's input first
                yield batch
                if batch and isinstance(batch[-1], Finished):
                    return
        finally:
            cancelled.set()

    def _job(self, request: EngineRequest, cancelled: threading.Event, emit: Emit) -> TurnJob:
        settings = self.settings
        parent = request.prefix if isinstance(request.prefix, LocalRenderState) else None
        temperature = settings.temperature if request.temperature is None else request.temperature
        rendered = self.rendered(request)
        return TurnJob(
            prompt=rendered.prompt,
            rendered=rendered.prefix,
            constraint=self.grammars.for_request(request),
            parent=parent,
            generate=request.generate,
            max_new_tokens=request.max_output_tokens or settings.max_output_tokens,
            temperature=temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            parse_tools=bool(request.tools) and request.tool_choice != "none",
            cancelled=cancelled,
            emit=emit,
        )


async def _gather(queue: asyncio.Queue[list[EngineDelta] | EngineError]) -> list[EngineDelta] | EngineError:
    """The next batch, merged with every batch already waiting (one write for tokens decoded together)."""
    first = await queue.get()
    if isinstance(first, EngineError):
        return first
    batch = list(first)
    while not queue.empty() and not (batch and isinstance(batch[-1], Finished)):
        more = queue.get_nowait()
        if isinstance(more, EngineError):
            return more
        batch.extend(more)
    return batch
