"""One response's event stream: engine deltas in, numbered wire events out, then a terminal state.

Owns sequence numbers, item lifecycles and the final Response; never sends, sleeps or reads a clock.
"""

from __future__ import annotations

import msgspec

from ..engines.base import (
    EngineDelta,
    Finished,
    ReasoningDelta,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallStart,
    UpstreamEvent,
    UpstreamItem,
)
from ..protocol import ids
from ..protocol.compaction import encode_summary
from ..protocol.events import (
    ContentPartAdded,
    ContentPartDone,
    CustomToolCallInputDelta,
    CustomToolCallInputDone,
    Event,
    ForwardedEvent,
    FunctionCallArgumentsDelta,
    FunctionCallArgumentsDone,
    LoopwireTiming,
    OutputItemAdded,
    OutputItemDone,
    OutputTextDelta,
    OutputTextDone,
    ReasoningSummaryPartAdded,
    ReasoningSummaryPartDone,
    ReasoningSummaryTextDelta,
    ReasoningSummaryTextDone,
    ReasoningTextDelta,
    ReasoningTextDone,
    ResponseCompleted,
    ResponseCreated,
    ResponseFailed,
    ResponseIncomplete,
    ResponseInProgress,
    encode,
)
from ..protocol.items import (
    Compaction,
    CustomToolCall,
    FunctionCall,
    Message,
    OutputItem,
    OutputText,
    Reasoning,
    ReasoningText,
    SummaryText,
    decode_item,
    wire,
)
from ..protocol.response import IncompleteDetails, Response, response_error, usage_of

_NO_LOGPROBS: list[object] = []
_decode_fields = msgspec.json.Decoder(dict[str, object]).decode


class Turn:
    """Feed it the engine's deltas in order; it returns the events to send for each."""

    __slots__ = (
        "_args",
        "_call",
        "_message",
        "_reasoning",
        "_seal_reasoning",
        "_seq",
        "_texts",
        "_upstream_open",
        "output",
        "response",
        "stream_id",
    )

    def __init__(
        self,
        response: Response,
        stream_id: str | None,
        *,
        include: tuple[str, ...] = (),
        first_sequence: int = 0,
    ) -> None:
        """`first_sequence` is 1 when a `response.queued` event (number 0) announced the turn."""
        self.response = response
        self.stream_id = stream_id
        self.output: list[OutputItem] = []
        self._seq = first_sequence
        self._message: Message | None = None
        self._texts: list[str] = []
        self._call: FunctionCall | CustomToolCall | None = None
        self._args: list[str] = []
        self._reasoning: _OpenReasoning | None = None
        self._upstream_open: str | None = None  # the id of an upstream item announced, not yet done
        self._seal_reasoning = "reasoning.encrypted_content" in include

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

    def compacted(self, item: Compaction) -> list[Event]:
        """The compaction the server made of the context before the model ran (`context_management`):
        an output item of its own, done at once, ahead of the model's."""
        events = self._close_item()
        index = len(self.output)
        self.output.append(item)
        sent = wire(item)
        events.append(
            OutputItemAdded(
                sequence_number=self._next(), stream_id=self.stream_id, output_index=index, item=sent
            )
        )
        events.append(
            OutputItemDone(
                sequence_number=self._next(), stream_id=self.stream_id, output_index=index, item=sent
            )
        )
        return events

    def feed(self, delta: EngineDelta) -> list[Event]:
        if isinstance(delta, TextDelta):
            return self._text(delta.text)
        if isinstance(delta, ToolArgumentsDelta):
            return self._arguments(delta.delta)
        if isinstance(delta, ToolCallStart):
            return self._start_call(delta)
        if isinstance(delta, ReasoningDelta):
            return self._reason(delta)
        if isinstance(delta, UpstreamItem):
            return self._upstream_item(delta)
        if isinstance(delta, UpstreamEvent):
            return self._forward(delta)
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

    def _upstream_item(self, delta: UpstreamItem) -> list[Event]:
        """An item an upstream runs itself, kept as sent: announced when it starts (its progress events
        then carry its index), finished when it is done (announced then, if it never was)."""
        try:
            item = decode_item(delta.item_json)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return []  # not an item of any known shape: nothing a client could use
        item_id = getattr(item, "id", None)
        events: list[Event] = []
        if not (delta.done and self._upstream_open is not None and self._upstream_open == item_id):
            events.extend(self._close_item())
            events.append(
                OutputItemAdded(
                    sequence_number=self._next(),
                    stream_id=self.stream_id,
                    output_index=len(self.output),
                    item=wire(item),
                )
            )
        if not delta.done:
            self._upstream_open = item_id or ""
            return events
        self._upstream_open = None
        index = len(self.output)
        self.output.append(item)
        events.append(
            OutputItemDone(
                sequence_number=self._next(), stream_id=self.stream_id, output_index=index, item=wire(item)
            )
        )
        return events

    def _forward(self, delta: UpstreamEvent) -> list[Event]:
        """An upstream's progress event, renumbered: its item is the one open at `len(self.output)`."""
        try:
            body = _decode_fields(delta.event_json)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return []
        name = body.get("type")
        if not isinstance(name, str):
            return []
        sequence = self._next()
        body["sequence_number"] = sequence
        if "output_index" in body:
            body["output_index"] = len(self.output)
        if self.stream_id is not None:
            body["stream_id"] = self.stream_id
        raw = msgspec.Raw(encode(body))
        return [ForwardedEvent(sequence_number=sequence, stream_id=self.stream_id, name=name, body=raw)]

    def _reason(self, delta: ReasoningDelta) -> list[Event]:
        events: list[Event] = []
        open_item = self._reasoning
        if open_item is not None and delta.item_id is not None and delta.item_id != open_item.id:
            events.extend(self._close_item())  # an upstream's next reasoning item
            open_item = None
        if open_item is None:
            events.extend(self._close_item())
            open_item = self._reasoning = _OpenReasoning(delta.item_id or ids.new_id("rs"))
            events.append(
                OutputItemAdded(
                    sequence_number=self._next(),
                    stream_id=self.stream_id,
                    output_index=len(self.output),
                    item=Reasoning(id=open_item.id, summary=[], status="in_progress"),
                )
            )
        if delta.encrypted_content is not None:
            open_item.encrypted_content = delta.encrypted_content
        if not delta.delta:
            return events
        index = len(self.output)
        if delta.part == "text":
            if not open_item.started_text:
                open_item.started_text = True
                events.append(
                    ContentPartAdded(
                        sequence_number=self._next(),
                        stream_id=self.stream_id,
                        item_id=open_item.id,
                        output_index=index,
                        content_index=0,
                        part=ReasoningText(text=""),
                    )
                )
            open_item.text.append(delta.delta)
            events.append(
                ReasoningTextDelta(
                    sequence_number=self._next(),
                    stream_id=self.stream_id,
                    item_id=open_item.id,
                    output_index=index,
                    content_index=0,
                    delta=delta.delta,
                )
            )
            return events
        summary_index = delta.summary_index
        while len(open_item.summaries) <= summary_index:
            events.extend(self._close_summary_part(open_item, index))
            open_item.summaries.append([])
            events.append(
                ReasoningSummaryPartAdded(
                    sequence_number=self._next(),
                    stream_id=self.stream_id,
                    item_id=open_item.id,
                    output_index=index,
                    summary_index=len(open_item.summaries) - 1,
                    part=SummaryText(text=""),
                )
            )
        open_item.summaries[summary_index].append(delta.delta)
        events.append(
            ReasoningSummaryTextDelta(
                sequence_number=self._next(),
                stream_id=self.stream_id,
                item_id=open_item.id,
                output_index=index,
                summary_index=summary_index,
                delta=delta.delta,
            )
        )
        return events

    def _close_summary_part(self, open_item: _OpenReasoning, index: int) -> list[Event]:
        """Done events of the newest summary part, when there is one not yet closed."""
        if len(open_item.summaries) == open_item.closed_summaries:
            return []
        summary_index = len(open_item.summaries) - 1
        text = "".join(open_item.summaries[summary_index])
        open_item.closed_summaries += 1
        return [
            ReasoningSummaryTextDone(
                sequence_number=self._next(),
                stream_id=self.stream_id,
                item_id=open_item.id,
                output_index=index,
                summary_index=summary_index,
                text=text,
            ),
            ReasoningSummaryPartDone(
                sequence_number=self._next(),
                stream_id=self.stream_id,
                item_id=open_item.id,
                output_index=index,
                summary_index=summary_index,
                part=SummaryText(text=text),
            ),
        ]

    def _close_reasoning(self, open_item: _OpenReasoning) -> list[Event]:
        index = len(self.output)
        events = self._close_summary_part(open_item, index)
        text = "".join(open_item.text)
        if open_item.started_text:
            part = ReasoningText(text=text)
            events.append(
                ReasoningTextDone(
                    sequence_number=self._next(),
                    stream_id=self.stream_id,
                    item_id=open_item.id,
                    output_index=index,
                    content_index=0,
                    text=text,
                )
            )
            events.append(
                ContentPartDone(
                    sequence_number=self._next(),
                    stream_id=self.stream_id,
                    item_id=open_item.id,
                    output_index=index,
                    content_index=0,
                    part=part,
                )
            )
        summary = [SummaryText(text="".join(pieces)) for pieces in open_item.summaries]
        encrypted = open_item.encrypted_content
        if encrypted is None and self._seal_reasoning:
            encrypted = seal_reasoning(summary, text)
        done = Reasoning(
            id=open_item.id,
            summary=summary,
            encrypted_content=encrypted,
            content=[ReasoningText(text=text)] if open_item.started_text else None,
            status="completed",
        )
        self._reasoning = None
        self.output.append(done)
        events.append(
            OutputItemDone(
                sequence_number=self._next(), stream_id=self.stream_id, output_index=index, item=done
            )
        )
        return events

    def _start_call(self, start: ToolCallStart) -> list[Event]:
        events = self._close_item()
        call: FunctionCall | CustomToolCall
        if start.kind == "custom":
            call = CustomToolCall(
                call_id=start.call_id,
                name=start.name,
                input="",
                id=ids.new_id("ctc"),
                status="in_progress",
                namespace=start.namespace,
            )
        else:
            call = FunctionCall(
                call_id=start.call_id,
                name=start.name,
                arguments="",
                id=ids.function_call_id(),
                status="in_progress",
                namespace=start.namespace,
            )
        self._call = call
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
        if isinstance(call, CustomToolCall):
            return [
                CustomToolCallInputDelta(
                    sequence_number=self._next(),
                    stream_id=self.stream_id,
                    item_id=call.id or "",
                    output_index=len(self.output),
                    delta=delta,
                )
            ]
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
        self._upstream_open = None  # an upstream item announced but never finished is left out
        if self._reasoning is not None:
            return self._close_reasoning(self._reasoning)
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
            return self._close_call(self._call, index)
        return []

    def _close_call(self, call: FunctionCall | CustomToolCall, index: int) -> list[Event]:
        text = "".join(self._args)
        self._call = None
        self._args = []
        closing: Event
        if isinstance(call, CustomToolCall):
            done: OutputItem = msgspec.structs.replace(call, input=text, status="completed")
            closing = CustomToolCallInputDone(
                sequence_number=self._next(),
                stream_id=self.stream_id,
                item_id=call.id or "",
                output_index=index,
                input=text,
            )
        else:
            done = msgspec.structs.replace(call, arguments=text, status="completed")
            closing = FunctionCallArgumentsDone(
                sequence_number=self._next(),
                stream_id=self.stream_id,
                item_id=call.id or "",
                output_index=index,
                name=call.name,
                arguments=text,
            )
        self.output.append(done)
        return [
            closing,
            OutputItemDone(
                sequence_number=self._next(), stream_id=self.stream_id, output_index=index, item=done
            ),
        ]

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
            output=[wire(item) for item in self.output],
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
        self._reasoning = None
        self.response = msgspec.structs.replace(
            self.response,
            status="failed",
            error=response_error(code, message),
            output=[wire(item) for item in self.output],
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


class _OpenReasoning:
    """A reasoning item being streamed: its summary parts and raw text so far."""

    __slots__ = ("closed_summaries", "encrypted_content", "id", "started_text", "summaries", "text")

    def __init__(self, item_id: str) -> None:
        self.id = item_id
        self.summaries: list[list[str]] = []
        self.closed_summaries = 0
        self.text: list[str] = []
        self.started_text = False
        self.encrypted_content: str | None = None


def seal_reasoning(summary: list[SummaryText], text: str) -> str:
    """The reasoning as an opaque payload this deployment reads back (`include:
    ["reasoning.encrypted_content"]`), so a store=false client can hand it back to the model."""
    return encode_summary(text or "\n".join(part.text for part in summary))
