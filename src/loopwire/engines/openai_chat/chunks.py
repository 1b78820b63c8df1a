"""Streamed chat-completions chunks into engine deltas, with the quirks of real servers normalised.

Owns reading chunk JSON (vLLM, llama.cpp, Ollama, SGLang, OpenAI shapes), tool-call assembly, the stop
reason and usage; must not do I/O, know the Responses wire format or decide about retries.

Quirks handled (see tests/fixtures/chat_chunks/README.md for where each shape comes from):
- a tool call's first chunk carries its id and name; later chunks only `index` and argument pieces
  (OpenAI, vLLM, llama.cpp); some servers repeat the id on every chunk (vLLM builds), some send a name
  only after arguments began, some send the whole arguments in one chunk (llama.cpp, Ollama);
- Ollama reuses `index: 0` for every call of a turn (and very old builds send no index at all): a chunk
  with another id and a name, after the current call's arguments form complete JSON, starts a new call;
- missing or empty call ids get a generated `call_...` id;
- `finish_reason` "stop" after tool calls (vLLM for a named tool choice, older Ollama) reads as tool_calls;
- usage comes in a final chunk with empty `choices`, in every chunk (continuous usage), only as
  llama.cpp's `timings`, or not at all: then it is estimated (common/estimate.py), and `usage_estimated`
  says so;
- errors inside a 200 stream: `data: {"error": {...}}` (vLLM, llama.cpp), `data: {"object": "error", ...}`
  (older vLLM), `error: {...}` lines (older llama.cpp); finish reasons "abort"/"error" (SGLang, vLLM);
- a server that ignores `stream: true` and answers one JSON completion (`feed_completion`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ...protocol import ids
from ...protocol.sse import SseDecoder, SseError, SseEvent
from ..base import (
    EngineDelta,
    EngineError,
    Finished,
    ReasoningDelta,
    StopReason,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallStart,
    Usage,
)
from ..common.estimate import estimate_output_tokens
from ..common.upstream_errors import context_overflow, message_of, upstream_error

DONE = b"[DONE]"
_FAILED_FINISH_REASONS = frozenset({"abort", "error"})


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | dict[str, Any] | None = None


class _ToolCallDelta(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct):
    content: str | list[Any] | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    message: _Delta | None = None  # a whole, non-streamed completion
    finish_reason: str | None = None


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None


class _Timings(msgspec.Struct):
    """llama.cpp's own counters, on the last chunk of every stream."""

    prompt_n: int | None = None
    cache_n: int | None = None
    predicted_n: int | None = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    timings: _Timings | None = None
    error: Any = None
    object: str | None = None
    message: Any = None  # older vLLM errors are flat: {"object": "error", "message": ...}


_decode_chunk = msgspec.json.Decoder(_Chunk).decode
_decode_any = msgspec.json.decode


@dataclass(slots=True)
class _Call:
    index: int | None
    id: str | None
    name: str | None = None
    started: bool = False
    waiting: list[str] = field(default_factory=list)  # argument pieces that came before the name
    pieces: list[str] = field(default_factory=list)


class ChunkParser:
    """Feed it the body of one streamed chat completion, read by read; each call returns the deltas that
    read completed (one batch). `done` turns true at `[DONE]`; then `finish()` gives the Finished delta."""

    __slots__ = (
        "_calls_seen",
        "_current",
        "_finished_indices",
        "_new_call_id",
        "_sse",
        "_timings",
        "_usage",
        "done",
        "finish_reason",
        "output_bytes",
        "output_chunks",
        "usage_estimated",
    )

    def __init__(self, new_call_id: Callable[[], str] = ids.call_id) -> None:
        self._sse = SseDecoder()
        self._new_call_id = new_call_id
        self._current: _Call | None = None
        self._finished_indices: set[int] = set()
        self._calls_seen = 0
        self._usage: _Usage | None = None
        self._timings: _Timings | None = None
        self.done = False
        self.finish_reason: str | None = None
        self.output_chunks = 0
        self.output_bytes = 0
        self.usage_estimated = False

    # -- input ---------------------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[EngineDelta]:
        """One network read of the SSE body."""
        try:
            events = self._sse.feed(data)
        except SseError as error:
            raise EngineError(
                f"the upstream stream is not readable: {error}", code="upstream_error"
            ) from None
        return self._events(events)

    def close(self) -> list[EngineDelta]:
        """The body ended: whatever event was still open counts."""
        return self._events(self._sse.close())

    def feed_completion(self, body: bytes) -> list[EngineDelta]:
        """A whole `chat.completion` JSON object, from a server that did not stream."""
        chunk = self._decode(body)
        out: list[EngineDelta] = []
        self._chunk(chunk, out, whole=True)
        self.done = True
        return out

    def _events(self, events: list[SseEvent]) -> list[EngineDelta]:
        out: list[EngineDelta] = []
        for event in events:
            if self.done:
                break
            data = event.data
            if event.event == "error":
                raise upstream_error(data)
            if data.strip() == DONE:
                self.done = True
                break
            self._chunk(self._decode(data), out, whole=False)
        return out

    def _decode(self, data: bytes) -> _Chunk:
        try:
            return _decode_chunk(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise EngineError(
                f"the upstream sent a chunk that is not a chat completion chunk: {error}",
                code="upstream_error",
            ) from None

    # -- one chunk -----------------------------------------------------------------------------------

    def _chunk(self, chunk: _Chunk, out: list[EngineDelta], *, whole: bool) -> None:
        if chunk.error is not None or chunk.object == "error":
            raise _error_from(chunk.error if chunk.error is not None else chunk.message)
        if chunk.usage is not None:
            self._usage = chunk.usage
        if chunk.timings is not None:
            self._timings = chunk.timings
        for choice in chunk.choices or ():
            if choice.index != 0:  # one choice is asked for; others are not this turn's output
                continue
            delta = choice.message if whole else choice.delta
            if delta is not None:
                self._delta(delta, out, whole=whole)
            reason = choice.finish_reason
            if reason:
                if reason in _FAILED_FINISH_REASONS:
                    raise EngineError(
                        f"the upstream stopped the generation (finish_reason {reason!r})",
                        code="upstream_error",
                    )
                self.finish_reason = reason

    def _delta(self, delta: _Delta, out: list[EngineDelta], *, whole: bool) -> None:
        before = len(out)
        produced = 0
        content = delta.content
        if isinstance(content, list):  # content parts (some servers, for multimodal or thinking models)
            content = "".join(
                part.get("text", "")
                for part in content
                if isinstance(part, dict) and part.get("type") == "text"
            )
        text = (content or "") + (delta.refusal or "")
        if text:
            if self._current is not None and self._current.started:
                self._end_current()  # text after a call closes it, in the core's Turn as here
            out.append(TextDelta(text))
            produced += len(text.encode())
        reasoning = delta.reasoning_content or delta.reasoning
        if reasoning:  # vLLM and llama.cpp: reasoning_content; Ollama: reasoning
            if self._current is not None and self._current.started:
                self._end_current()  # as text does: the Turn closes the call for a new item
            out.append(ReasoningDelta(reasoning))
            produced += len(reasoning.encode())
        if delta.tool_calls:
            for position, call in enumerate(delta.tool_calls):
                if whole and call.index is None:
                    call.index = position
                produced += self._tool_call(call, out)
        if produced or len(out) > before:
            self.output_chunks += 1
            self.output_bytes += produced

    # -- tool calls ----------------------------------------------------------------------------------

    def _tool_call(self, delta: _ToolCallDelta, out: list[EngineDelta]) -> int:
        function = delta.function
        name = function.name if function is not None and function.name else None
        arguments = function.arguments if function is not None else None
        if isinstance(arguments, dict):  # a server that sent an object instead of a JSON string
            arguments = msgspec.json.encode(arguments).decode("utf-8")
        call_id = delta.id or None
        call = self._route(delta.index, call_id, name)
        if call.id is None and call_id is not None and not call.started:
            call.id = call_id
        if call.name is None and name is not None:
            call.name = name
        if not call.started and call.name is not None:
            call.started = True
            out.append(ToolCallStart(call_id=call.id or self._new_call_id(), name=call.name))
            if call.waiting:
                out.append(ToolArgumentsDelta("".join(call.waiting)))
                call.waiting.clear()
        if not arguments:
            return len(name.encode()) if name else 0
        call.pieces.append(arguments)
        if call.started:
            out.append(ToolArgumentsDelta(arguments))
        else:
            call.waiting.append(arguments)
        return len(arguments.encode())

    def _route(self, index: int | None, call_id: str | None, name: str | None) -> _Call:
        """The call this piece belongs to: the current one while the index matches (or is missing), unless
        (a reused or missing index) it carries another id and a name after the current arguments are
        complete JSON; else a new call. A nameless piece for a call that already ended cannot be placed."""
        current = self._current
        if current is not None:
            same_index = index is None or current.index is None or index == current.index
            new_call_here = (
                call_id is not None
                and current.id is not None
                and call_id != current.id
                and name is not None
                and _complete_json(current.pieces)
            )
            if same_index and not new_call_here:
                return current
        if name is None and index is not None and index in self._finished_indices:
            raise EngineError(
                f"the upstream sent more of tool call {index} after it had ended "
                "(tool calls and text must stream one after another)",
                code="upstream_error",
            )
        return self._start(index, call_id)

    def _start(self, index: int | None, call_id: str | None) -> _Call:
        self._end_current()
        call = self._current = _Call(index=index, id=call_id)
        self._calls_seen += 1
        return call

    def _end_current(self) -> None:
        current = self._current
        if current is None:
            return
        if not current.started:
            raise EngineError("the upstream sent a tool call without a function name", code="upstream_error")
        if current.index is not None:
            self._finished_indices.add(current.index)
        self._current = None

    # -- the end -------------------------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """The upstream said the turn is over (`[DONE]` or a finish reason); a usage chunk may follow."""
        return self.done or self.finish_reason is not None

    def finish(self, estimate_input_tokens: Callable[[], int]) -> Finished:
        """The Finished delta, once the stream is complete. A stream that ended without `[DONE]` and
        without a finish reason was cut: that is an error, not a short answer."""
        if not self.complete:
            raise EngineError(
                "the upstream closed the stream before the turn finished", code="upstream_error"
            )
        self._end_current()
        return Finished(self._usage_of(estimate_input_tokens), self._stop_reason(), None)

    def _stop_reason(self) -> StopReason:
        if self.finish_reason == "length":
            return "length"
        if self._calls_seen:
            return "tool_calls"
        return "stop"

    def _usage_of(self, estimate_input_tokens: Callable[[], int]) -> Usage:
        usage, timings = self._usage, self._timings
        estimated_output = estimate_output_tokens(self.output_chunks, self.output_bytes)
        if usage is not None and (usage.prompt_tokens is not None or usage.completion_tokens is not None):
            prompt = usage.prompt_tokens
            completion = usage.completion_tokens
            self.usage_estimated = prompt is None or completion is None
            input_tokens = prompt if prompt is not None else estimate_input_tokens()
            details = usage.prompt_tokens_details
            cached = details.cached_tokens if details is not None and details.cached_tokens else 0
            reasoning_details = usage.completion_tokens_details
            reasoning = reasoning_details.reasoning_tokens if reasoning_details is not None else None
            return Usage(
                input_tokens=input_tokens,
                cached_tokens=min(cached, input_tokens),
                output_tokens=completion if completion is not None else estimated_output,
                reasoning_tokens=reasoning or 0,
            )
        if timings is not None and timings.prompt_n is not None:
            cached = timings.cache_n or 0
            self.usage_estimated = timings.predicted_n is None
            output = timings.predicted_n if timings.predicted_n is not None else estimated_output
            return Usage(input_tokens=timings.prompt_n + cached, cached_tokens=cached, output_tokens=output)
        self.usage_estimated = True
        return Usage(input_tokens=estimate_input_tokens(), output_tokens=estimated_output)


def _complete_json(pieces: list[str]) -> bool:
    text = "".join(pieces)
    if not text.strip():
        return False
    try:
        _decode_any(text)
    except msgspec.DecodeError:
        return False
    return True


def _error_from(error: Any) -> EngineError:
    detail = message_of(error)
    overflow = context_overflow(msgspec.json.encode({"error": error}), detail)
    return overflow or EngineError(f"the upstream failed the generation: {detail}", code="upstream_error")
