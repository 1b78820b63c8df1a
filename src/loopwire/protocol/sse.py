"""Server-sent events, read side: body bytes in (any chunking), complete events out, each of bounded size.

Owns SSE framing when reading a stream: line ends (`\\n`, `\\r\\n`, `\\r`, a `\\r\\n` split across reads),
fields, `:` comments, blank-line dispatch, and the size bound of one event. Must not look inside event data
(JSON, `[DONE]`: the callers' business) nor do I/O. Shared by the gateway engines (their upstreams'
streams) and the client (a loopwire server's stream); the write side is `events.sse_frame`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import msgspec

MAX_EVENT_BYTES = 16 * 1024 * 1024
"""The most bytes one event may span, from its first line through the blank line that ends it (each line
end counted as one byte). A longer event is refused with SseError, at the latest when its bytes still
waiting for their blank line pass the bound: a stream that never ends its event costs at most this much
memory (plus one read)."""


T = TypeVar("T")


class SseEvent(msgspec.Struct, frozen=True, gc=False):
    """One event: its name (`message` unless an `event:` line says otherwise) and its joined data lines."""

    event: str
    data: bytes


class SseError(ValueError):
    """The byte stream cannot be read as server-sent events (an event longer than the bound)."""


class SseDecoder:
    """Feed it reads in order; each call returns the events completed by that read.

    The SSE rules that matter for API streams: several `data:` lines joined by `\\n`, one optional space
    after the colon, a field name without a colon (`data` alone is an empty data line), the event name
    from `event:` (`message` by default), no event for a block without data (comments, keep-alives), `id`
    and `retry` ignored. Also reads llama.cpp's older `error: {...}` line (not an SSE field) as an
    `error` event.
    """

    __slots__ = ("_buffer", "max_event_bytes")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self._buffer = b""

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet ended by a blank line (line ends already made `\\n`)."""
        return self._buffer

    def feed(self, chunk: bytes) -> list[SseEvent]:
        return self._read(chunk, _event_of)

    def feed_data(self, chunk: bytes) -> list[bytes]:
        """`feed` for a caller that reads only each event's data (the client): no names are built."""
        return self._read(chunk, _data_of)

    def _read(self, chunk: bytes, read: Callable[[bytes], T | None]) -> list[T]:
        out: list[T] = []
        for block in self._blocks(chunk):
            value = read(block)
            if value is not None:
                out.append(value)
        return out

    def _blocks(self, chunk: bytes) -> list[bytes]:
        """The blocks of lines this read completes, each one event's lines without its blank line."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            # a trailing CR may be the first half of a CRLF split across reads: decide on the next one
            tail = b"\r" if buffer.endswith(b"\r") else b""
            body = buffer[:-1] if tail else buffer
            buffer = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._buffer = buffer
            self._check(len(buffer))
            return []
        self._buffer = buffer[end + 2 :]
        self._check(len(self._buffer))
        blocks = buffer[:end].split(b"\n\n")
        if end > self.max_event_bytes - 2:  # only then can one block (and its blank line) be too long
            for block in blocks:
                self._check(len(block) + 2)
        return blocks

    def close(self) -> list[SseEvent]:
        """The stream ended: an event without its final blank line still counts."""
        buffer, self._buffer = self._buffer.replace(b"\r", b""), b""
        event = _event_of(buffer)
        return [] if event is None else [event]

    def _check(self, size: int) -> None:
        if size > self.max_event_bytes:
            raise SseError(f"an event is longer than {self.max_event_bytes} bytes")


MAX_NAMES = 1024
"""How many distinct `event:` lines are remembered decoded (an API has a few dozen event types)."""
_NAMES: dict[bytes, str] = {}


def _data_of(block: bytes) -> bytes | None:
    """The data of the event in `block`, or None (see `_event_of`)."""
    newline = block.find(b"\n")
    if newline < 0:
        if block.startswith(b"data: "):
            return block[6:]
    elif (
        block.startswith(b"data: ", newline + 1)
        and block.startswith(b"event:")
        and block.find(b"\n", newline + 1) < 0
    ):
        return block[newline + 7 :]
    event = _event_of(block)
    return None if event is None else event.data


def _event_of(block: bytes) -> SseEvent | None:
    """One event from the lines between two blank lines (an empty line in it can only lead or trail)."""
    newline = block.find(b"\n")
    if newline < 0:
        if block.startswith(b"data: "):  # a chat chunk: one data line
            return SseEvent("message", block[6:])
    elif (
        block.startswith(b"data: ", newline + 1)
        and block.startswith(b"event: ")
        and block.find(b"\n", newline + 1) < 0
    ):  # a Responses event: one event line, one data line
        line = block[:newline]
        name = _NAMES.get(line)
        if name is None:
            name = line[7:].decode("utf-8", "replace") or "message"
            if len(_NAMES) < MAX_NAMES:
                _NAMES[line] = name
        return SseEvent(name, block[newline + 7 :])
    name = ""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[0] == 0x3A:  # an edge of the block, or a ":" comment
            continue
        field, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
        elif field == b"error":
            name = "error"
            data.append(value)
    if not data:
        return None
    return SseEvent(name or "message", b"\n".join(data))
