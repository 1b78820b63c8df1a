"""What the client needs to know about a server event: its type, whether it is output, its response id.

Owns reading event payloads cheaply (type sniffing before a full decode); holds no turn state.
"""

from __future__ import annotations

from typing import Any

import msgspec

TERMINAL_TYPES = frozenset({"response.completed", "response.failed", "response.incomplete"})
"""Events that end a turn with a Response; an `error` event ends it without one."""
LIFECYCLE_TYPES = frozenset({"response.created", "response.in_progress", "response.queued"})
"""Events that announce a response before the model has produced anything."""
CONNECTION_RETIRED = "websocket_connection_limit_reached"
"""The error code of a socket that reached its age limit: the server takes no new request on it."""
RETIRING_CODES = frozenset({CONNECTION_RETIRED, "server_shutting_down", "websocket_idle_timeout"})
"""Connection-level errors of a socket the server is retiring (age limit, shutdown, idle): a request that
gets one was refused without running, and goes again on a new socket."""
RESUME_EVENT = "loopwire.resume_token"
"""The server's reconnect-grace token for the socket, sent once right after the upgrade when asked for."""
RESUME_HEADER = "x-loopwire-resume"
"""Upgrade header asking for a token: `new`, or the token of a dropped socket whose lanes to take back."""
TIMING_EVENT = "loopwire.timing"
"""The server's opt-in time breakdown of a turn (`--timing-events on`), sent before its terminal event."""
RESEND_EVENT = "loopwire.client.resend"
"""The client's own event, yielded when a request is sent again after the link dropped before any
output of it arrived: the events before it belonged to an attempt that will not finish."""

_TYPE_PREFIX = b'{"type":"'
_ID_MARK = b'"id":"resp_'
_decode = msgspec.json.decode


def decode(payload: bytes) -> dict[str, Any]:
    event = _decode(payload)
    if not isinstance(event, dict):
        raise ValueError(f"expected a JSON object event, got {payload[:80]!r}")
    return event


def event_type(payload: bytes) -> str:
    """The event's `type`, read from the first bytes when the server put it first (loopwire and OpenAI
    do), else from a full decode."""
    if payload.startswith(_TYPE_PREFIX):
        end = payload.find(b'"', 9)
        if end > 9:
            return payload[9:end].decode()
    kind = decode(payload).get("type")
    return kind if isinstance(kind, str) else ""


def is_output(kind: str) -> bool:
    """True for events that carry model output (items, parts, deltas): once one has arrived for a
    request, the request is never sent again."""
    return kind.startswith("response.") and kind not in LIFECYCLE_TYPES and kind not in TERMINAL_TYPES


def is_first_token(kind: str) -> bool:
    """The events whose first arrival is time to first token: any output delta."""
    return kind.endswith(".delta") and kind.startswith("response.")


def response_id_of(payload: bytes) -> str | None:
    """The response id carried by a lifecycle event, without decoding it."""
    start = payload.find(_ID_MARK)
    if start < 0:
        return None
    start += 6
    end = payload.find(b'"', start)
    return payload[start:end].decode() if end > start else None


def resend_event(attempt: int, reason: str) -> bytes:
    return msgspec.json.encode({"type": RESEND_EVENT, "attempt": attempt, "reason": reason})
