"""An incremental server-sent-events decoder: network reads in, complete events out.

Owns SSE framing only (lines, fields, blank-line dispatch, comments); must not look inside event data.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PENDING_BYTES = 16 * 1024 * 1024
"""An event still incomplete after this many bytes is not a chat chunk: the stream is refused."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: bytes


class SseError(ValueError):
    """The byte stream cannot be read as server-sent events."""


class SseDecoder:
    """Feed it reads in order; each call returns the events completed by that read.

    Follows the SSE rules that matter for chat streams: `\\n`, `\\r\\n` or `\\r` line ends, `:` comments,
    several `data:` lines joined by `\\n`, one optional space after the colon. Also reads llama.cpp's
    older `error: {...}` line (not an SSE field) as an `error` event.
    """

    __slots__ = ("_buffer", "_data", "_event")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._event = ""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        buffer = self._buffer + chunk if self._buffer else chunk
        tail = b""
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):  # a \r\n may be split across reads: decide on the next one
                buffer, tail = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._buffer = lines.pop() + tail
        events: list[SseEvent] = []
        for line in lines:
            self._line(line, events)
        pending = len(self._buffer) + sum(map(len, self._data))
        if pending > MAX_PENDING_BYTES:
            raise SseError(f"an event grew past {MAX_PENDING_BYTES} bytes without ending")
        return events

    def close(self) -> list[SseEvent]:
        """The stream ended: an event without its final blank line still counts."""
        events: list[SseEvent] = []
        if self._buffer:
            buffer, self._buffer = self._buffer.replace(b"\r", b""), b""
            self._line(buffer, events)
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[SseEvent]) -> None:
        if not line:
            if self._data:
                events.append(SseEvent(self._event or "message", b"\n".join(self._data)))
            self._data = []
            self._event = ""
            return
        if line[0] == 0x3A:  # ":" comment (keep-alive pings)
            return
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"error":
            self._event = "error"
            self._data.append(value)
