"""Server-sent events: turns the bytes of an HTTP response body into the data payload of each event.

Owns SSE framing only (incremental, any chunking, LF or CRLF); never decodes the JSON inside.
"""

from __future__ import annotations

DONE = b"[DONE]"


class SseDecoder:
    """Feed body chunks as they arrive; each call returns the payloads of the events it completed."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            # A trailing CR may be the first half of a CRLF split across chunks: keep it for later.
            tail = b"\r" if buffer.endswith(b"\r") else b""
            body = buffer[:-1] if tail else buffer
            buffer = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._buffer = buffer
            return []
        self._buffer = buffer[end + 2 :]
        payloads: list[bytes] = []
        for block in buffer[:end].split(b"\n\n"):
            payload = _data_of(block)
            if payload is not None and payload != DONE:
                payloads.append(payload)
        return payloads

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet terminated by a blank line."""
        return self._buffer


def _data_of(block: bytes) -> bytes | None:
    """The joined `data:` lines of one event block, or None when it has none (comments, keep-alives)."""
    data = block.find(b"\ndata: ")
    if data >= 0 and block.startswith(b"event:") and block.find(b"\n", data + 1) < 0:
        return block[data + 7 :]  # the common shape: one event line, one data line
    lines = [_field_value(line) for line in block.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(lines)


def _field_value(line: bytes) -> bytes:
    value = line[5:]
    return value[1:] if value.startswith(b" ") else value
