"""One response's event stream: engine deltas in, numbered wire events out, then a terminal state.

Owns sequence numbers, item lifecycles and the final Response; never sends, sleeps or reads a clock.
"""

from __future__ import annotations

import msgspec

from ..engines.base import EngineDelta, Finished, TextDelta, ToolArgumentsDelta, ToolCallStart
from ..protocol import ids
from ..protocol.events import (
    ContentPartAdded,
    ContentPartDone,
    Event,
    FunctionCallArgumentsDelta,
    FunctionCallArgumentsDone,
    LoopwireTiming,
    OutputItemAdded,
    OutputItemDone,
    OutputTextDelta,
    OutputTextDone,
    ResponseCompleted,
    ResponseCreated,
    ResponseFailed,
    ResponseIncomplete,
    ResponseInProgress,
    encode,
)
from ..protocol.items import FunctionCall, Message, OutputItem, OutputText
from ..protocol.response import IncompleteDetails, Response, response_error, usage_of

_NO_LOGPROBS: list[object] = []


class Turn:
    """Feed it the engine's deltas in order; it returns the events to send for each."""

    __slots__ = ("_args", "_call", "_message", "_seq", "_texts", "output", "response", "stream_id")

    def __init__(self, response: Response, stream_id: str | None) -> None:
        self.response = response
        self.stream_id = stream_id
        self.output: list[OutputItem] = []
        self._seq = 0
        self._message: Message | None = None
        self._texts: list[str] = []
        self._call: FunctionCall | None = None
        self._args: list[str] = []

    def _next(self) -> int:
        seq = self._seq
        self._seq = seq + 1
        return seq

    def opening(self, *, generate: bool = True) -> list[Event]:
        snapshot = msgspec.Raw(encode(self.response))  # encoded once, sent twice
        created: list[Event] = [
            ResponseCreated(sequence_number=self._next(), stream_id=self.stream_id, response=snapshot)
        ]
        if generate:
            created.append(
                ResponseInProgress(sequence_number=self._next(), stream_id=self.stream_id, response=snapshot)
            )
        return created

    def feed(self, delta: EngineDelta) -> list[Event]:
        if isinstance(delta, TextDelta):
            return self._text(delta.text)
        if isinstance(delta, ToolArgumentsDelta):
            return self._arguments(delta.delta)
        if isinstance(delta, ToolCallStart):
            return self._start_call(delta)
        raise TypeError(f"Turn.feed does not take {type(delta).__name__}; pass Finished to finish()")

    def _text(self, text: str) -> list[Event]:
        events: list[Event] = []
        message = self._message
        if message is None:
            events.extend(self._close_item())
            message = self._message = Message(
                role="assistant", content=[], id=ids.message_id(), status="in_progress"
            )
            index = len(self.output)
            events.append(
                OutputItemAdded(
                    sequence_number=self._next(), stream_id=self.stream_id, output_index=index, item=message
                )
            )
            events.append(
                ContentPartAdded(
                    sequence_number=self._next(),
                    stream_id=self.stream_id,
                    item_id=message.id or "",
                    output_index=index,
                    content_index=0,
                    part=OutputText(text=""),
                )
            )
        self._texts.append(text)
        events.append(
            OutputTextDelta(
                sequence_number=self._next(),
                stream_id=self.stream_id,
                item_id=message.id or "",
                output_index=len(self.output),
                content_index=0,
                delta=text,
                logprobs=_NO_LOGPROBS,
            )
        )
        return events

    def _start_call(self, start: ToolCallStart) -> list[Event]:
        events = self._close_item()
        call = self._call = FunctionCall(
            call_id=start.call_id,
            name=start.name,
            arguments="",
            id=ids.function_call_id(),
            status="in_progress",
        )
        events.append(
            OutputItemAdded(
                sequence_number=self._next(),
                stream_id=self.stream_id,
                output_index=len(self.output),
                item=call,
            )
        )
        return events

    def _arguments(self, delta: str) -> list[Event]:
        call = self._call
        if call is None:
            raise ValueError("engine sent tool-call arguments before starting a call")
        self._args.append(delta)
        return [
            FunctionCallArgumentsDelta(
                sequence_number=self._next(),
                stream_id=self.stream_id,
                item_id=call.id or "",
                output_index=len(self.output),
                delta=delta,
            )
        ]

    def _close_item(self) -> list[Event]:
        index = len(self.output)
        if self._message is not None:
            item_id = self._message.id or ""
            text = "".join(self._texts)
            part = OutputText(text=text)
            done = Message(role="assistant", content=[part], id=item_id, status="completed")
            self._message = None
            self._texts = []
            self.output.append(done)
            return [
                OutputTextDone(
                    sequence_number=self._next(),
                    stream_id=self.stream_id,
                    item_id=item_id,
                    output_index=index,
                    content_index=0,
                    text=text,
                    logprobs=_NO_LOGPROBS,
                ),
                ContentPartDone(
                    sequence_number=self._next(),
                    stream_id=self.stream_id,
                    item_id=item_id,
                    output_index=index,
                    content_index=0,
                    part=part,
                ),
                OutputItemDone(
                    sequence_number=self._next(), stream_id=self.stream_id, output_index=index, item=done
                ),
            ]
        if self._call is not None:
            call = self._call
            arguments = "".join(self._args)
            finished = FunctionCall(
                call_id=call.call_id, name=call.name, arguments=arguments, id=call.id, status="completed"
            )
            self._call = None
            self._args = []
            self.output.append(finished)
            return [
                FunctionCallArgumentsDone(
                    sequence_number=self._next(),
                    stream_id=self.stream_id,
                    item_id=call.id or "",
                    output_index=index,
                    name=call.name,
                    arguments=arguments,
                ),
                OutputItemDone(
                    sequence_number=self._next(), stream_id=self.stream_id, output_index=index, item=finished
                ),
            ]
        return []

    def finish(self, finished: Finished, now: int) -> tuple[list[Event], Response]:
        """Close any open item and build the final Response. The terminal event comes from
        `terminal()`, sent only after the caller has committed the response."""
        events = self._close_item()
        usage = finished.usage
        incomplete = finished.stop_reason == "length"
        self.response = msgspec.structs.replace(
            self.response,
            status="incomplete" if incomplete else "completed",
            completed_at=None if incomplete else now,
            incomplete_details=IncompleteDetails(reason="max_output_tokens") if incomplete else None,
            output=self.output,
            usage=usage_of(
                usage.input_tokens, usage.cached_tokens, usage.output_tokens, usage.reasoning_tokens
            ),
        )
        return events, self.response

    def fail(self, code: str, message: str) -> Response:
        """End the turn as failed and return the failed Response: an item still open is dropped from the
        output with no done events (the items already done stay). The terminal event comes from
        `terminal()`."""
        self._message = None
        self._call = None
        self.response = msgspec.structs.replace(
            self.response,
            status="failed",
            error=response_error(code, message),
            output=self.output,
        )
        return self.response

    def timing(self, timings: dict[str, float]) -> Event:
        """The opt-in vendor event with the server's time breakdown of this turn (numbered like the rest)."""
        return LoopwireTiming(
            sequence_number=self._next(),
            stream_id=self.stream_id,
            response_id=self.response.id,
            timings=timings,
        )

    def terminal(self, encoded_response: bytes) -> Event:
        raw = msgspec.Raw(encoded_response)
        status = self.response.status
        if status == "completed":
            return ResponseCompleted(sequence_number=self._next(), stream_id=self.stream_id, response=raw)
        if status == "incomplete":
            return ResponseIncomplete(sequence_number=self._next(), stream_id=self.stream_id, response=raw)
        return ResponseFailed(sequence_number=self._next(), stream_id=self.stream_id, response=raw)
