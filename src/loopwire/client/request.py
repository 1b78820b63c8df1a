"""The bytes of a create request: a WebSocket `response.create` frame or an HTTP body with `stream: true`.

Owns the encoding (the fields are encoded once per turn and spliced in); decides nothing about what to send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .delta import InputPlan

RESERVED_FIELDS = frozenset(
    {"type", "input", "previous_response_id", "store", "stream", "stream_id", "background", "generate"}
)
"""Fields the session sets itself; callers may not pass them as extra fields."""

_encode = msgspec.json.encode


def canonical_fields(fields: Mapping[str, Any]) -> bytes:
    """Every non-input field as JSON with sorted keys: equal settings always give equal bytes, so the
    delta rule compares bytes and a caller mutating a tools list after a turn is still noticed."""
    return _encode(dict(fields), order="sorted")


def _body(head: bytes, fields: bytes, plan: InputPlan, tail: bytes) -> bytes:
    parts = [head]
    inner = fields[1:-1]
    if inner:
        parts += [inner, b","]
    parts += [b'"input":', _encode(plan.input)]
    if plan.previous_response_id is not None:
        parts += [b',"previous_response_id":', _encode(plan.previous_response_id)]
    parts.append(tail)
    return b"".join(parts)


def ws_frame(fields: bytes, plan: InputPlan, stream_id: str | None = None) -> bytes:
    tail = b"}" if stream_id is None else b',"stream_id":' + _encode(stream_id) + b"}"
    return _body(b'{"type":"response.create",', fields, plan, tail)


def http_body(fields: bytes, plan: InputPlan) -> bytes:
    return _body(b'{"stream":true,', fields, plan, b"}")
