"""The client's exceptions: a refused request, a turn cut after output, a server that cannot be reached.

Owns the error types and reading the server's error shapes into them; decides no retry or fallback.
"""

from __future__ import annotations

from typing import Any

import msgspec


class ClientError(Exception):
    """Base of every error the loopwire client raises."""


class RequestError(ClientError):
    """The server refused the request (an HTTP error status or a WebSocket `error` event) or failed it."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        self.status = status
        self.error = error
        self.code: str | None = error.get("code")
        self.type: str | None = error.get("type")
        self.param: str | None = error.get("param")
        self.message = str(error.get("message") or "the server refused the request")
        super().__init__(f"{status} {self.code or self.type or 'error'}: {self.message}")

    @classmethod
    def from_http(cls, status: int, body: bytes) -> RequestError:
        try:
            decoded = msgspec.json.decode(body)
        except msgspec.DecodeError:
            decoded = None
        error = decoded.get("error") if isinstance(decoded, dict) else None
        if not isinstance(error, dict):
            error = {"message": body[:500].decode(errors="replace") or f"HTTP {status}", "code": None}
        return cls(status, error)

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> RequestError:
        error = event.get("error")
        if not isinstance(error, dict):
            error = {"message": str(error), "code": None}
        status = event.get("status")
        return cls(status if isinstance(status, int) else 400, error)


class TransportError(ClientError):
    """The server could not be reached, or the link failed, and the client's retries are exhausted."""


class ConnectionLost(TransportError):
    """The link dropped (or the server stopped answering) while a request was on it."""


class UpgradeRefused(TransportError):
    """The server answered the WebSocket upgrade with an HTTP status instead of 101."""

    def __init__(self, status: int, body: bytes = b"") -> None:
        self.status = status
        self.body = body
        super().__init__(f"the WebSocket upgrade was answered with HTTP {status}")


class StreamError(ClientError):
    """The server's response stream cannot be read (an event longer than the SSE bound,
    `protocol.sse.MAX_EVENT_BYTES`). Not resent: the same request would get the same stream."""


class TurnInterrupted(ClientError):
    """The link dropped after output of the turn had arrived. The request is not resent, because the
    server may have run (and stored) it: sending it again could run the turn twice. The session's last
    completed response is unchanged, so the caller may run the turn again deliberately."""

    def __init__(self, message: str, *, response_id: str | None, transport: str) -> None:
        self.response_id = response_id
        self.transport = transport
        super().__init__(message)
