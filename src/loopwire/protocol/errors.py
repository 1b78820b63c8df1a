"""Protocol errors: one exception type that knows its HTTP status and both wire shapes.

Owns the mapping from a broken rule to `{"error": {...}}` bodies and WebSocket error events; sends nothing.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

_encode = msgspec.json.encode


class ProtocolError(Exception):
    """A request-scoped failure that the client should see as a spec-shaped error."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def error_object(self) -> dict[str, Any]:
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}

    def http_body(self) -> bytes:
        return _encode({"error": self.error_object()})

    def ws_event(self, stream_id: str | None = None) -> bytes:
        """The WebSocket `error` event: the HTTP status beside the error, whose `headers` carry what an
        HTTP answer would have sent as headers (`retry-after`, ...)."""
        error = self.error_object()
        if self.headers:
            error["headers"] = self.headers
        event: dict[str, Any] = {"type": "error", "status": self.status, "error": error}
        if stream_id is not None:
            event["stream_id"] = stream_id
        return _encode(event)


def invalid_request(
    message: str, *, param: str | None = None, code: str | None = "invalid_value"
) -> ProtocolError:
    return ProtocolError(400, message, code=code, param=param)


_PATH = re.compile(r" - at `\$\.?(.*)`$")
_MISSING = re.compile(r"^Object missing required field `([^`]+)`")


def validation_error(error: msgspec.ValidationError, prefix: str = "") -> ProtocolError:
    """A msgspec validation failure as a 400 naming the field: the path msgspec reports, under `prefix`
    (`tools[4]`), ending in the missing field's name when a required one is absent."""
    text = str(error)
    match = _PATH.search(text)
    message, path = (text, "") if match is None else (text[: match.start()], match.group(1))
    missing = _MISSING.match(message)
    if missing is not None:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
    if prefix:
        path = prefix + ("" if not path or path.startswith("[") else ".") + path
    if not path:
        return invalid_request(f"Invalid request body: {message}.", code="invalid_type")
    return invalid_request(f"Invalid value for '{path}': {message}.", param=path, code="invalid_type")


def missing_parameter(param: str) -> ProtocolError:
    return ProtocolError(
        400, f"Missing required parameter: '{param}'.", code="missing_required_parameter", param=param
    )


def previous_response_not_found(response_id: str) -> ProtocolError:
    return ProtocolError(
        400,
        f"Previous response with id '{response_id}' not found.",
        code="previous_response_not_found",
        param="previous_response_id",
    )


def context_length_exceeded(input_tokens: int, window: int, *, truncating: bool = False) -> ProtocolError:
    """The input does not fit the model's context window: the request allows no truncation, or even what
    truncation may not drop (the newest input) is too large."""
    hint = "" if truncating else ", or set truncation to 'auto'"
    return invalid_request(
        f"Your input exceeds the context window of this model ({input_tokens} tokens > {window}). "
        f"Please adjust your input and try again{hint}.",
        param="input",
        code="context_length_exceeded",
    )


def response_not_found(response_id: str) -> ProtocolError:
    return ProtocolError(404, f"No response found with id '{response_id}'.", code="not_found")


def rate_limited(retry_after_s: float) -> ProtocolError:
    seconds = max(1, int(retry_after_s + 0.999))
    return ProtocolError(
        429,
        f"Rate limit reached for this API key; retry in {seconds} s.",
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers={"retry-after": str(seconds)},
    )


def too_many_connections(limit: int) -> ProtocolError:
    return ProtocolError(
        429,
        f"This API key already has {limit} open WebSocket connections, the most it may.",
        type="rate_limit_error",
        code="too_many_connections",
    )


def server_error(message: str = "The server had an error while processing your request.") -> ProtocolError:
    return ProtocolError(500, message, type="server_error", code="server_error")


def store_unavailable() -> ProtocolError:
    return ProtocolError(
        503,
        "The response store is unavailable; requests that need stored responses cannot be served right now.",
        type="server_error",
        code="store_unavailable",
    )
