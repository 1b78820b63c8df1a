"""An upstream's error body as an engine error: its message, and recognising its "the prompt does not fit my
context" refusal, so it reaches the client as the `context_length_exceeded` error the core uses for its own
window check rather than a generic upstream error. Shared by the openai-chat engine and the local engine's
token-id upstream mode.

What each server answers (HTTP 400 in every case, before any output):
- vLLM: "This model's maximum context length is W tokens. However, your request has P input tokens. ..."
  (older: "However, you requested T tokens (P in the messages, C in the completion). ..."); its refusal of
  an output cap that does not fit after the prompt ("'max_tokens' or 'max_completion_tokens' is too large:
  X. This model's maximum context length is W tokens and your request has P input tokens (X > W - P)") is
  not an overflow of the prompt, and is left to the engine's retry without the cap.
- llama.cpp's llama-server: type `exceed_context_size_error`, "request (P tokens) exceeds the available
  context size (W tokens), try increasing it", with `n_prompt_tokens` and `n_ctx` (older: "the request
  exceeds the available context size, try increasing it").
- llama-cpp-python's server: code `context_length_exceeded`, its `Llama` raising "Requested tokens (P)
  exceed context window of W" reworded as vLLM's older form ("(P in the messages, C in the completion)").
- OpenAI: code `context_length_exceeded`, "... However, your messages resulted in P tokens ...".

Owns the recognition and the messages; must not do I/O or decide what the turn does with it.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ..base import EngineError

CODE = "context_length_exceeded"
MAX_ERROR_MESSAGE_CHARS = 500

_PHRASES = (
    "maximum context length",
    "exceeds the available context size",
    "exceed context window",
    "context_length_exceeded",
    "exceed_context_size_error",
)
_WINDOW = (
    re.compile(r"maximum context length is (\d+)"),
    re.compile(r"available context size \((\d+) tokens?\)"),
    re.compile(r"exceed context window of (\d+)"),
)
_PROMPT = (
    re.compile(r"your request has (\d+) input tokens"),
    re.compile(r"\((\d+) in the messages"),
    re.compile(r"your messages resulted in (\d+) tokens"),
    re.compile(r"requested tokens \((\d+)\)"),
    re.compile(r"request \((\d+) tokens?\)"),
)


def context_overflow(data: bytes, detail: str) -> EngineError | None:
    """The `context_length_exceeded` EngineError for an upstream error body that says the prompt does not
    fit the model's context, else None. `detail` is the body's message (chunks.error_text)."""
    fields = _error_fields(data)
    text = " ".join(
        str(value) for value in (detail, fields.get("type"), fields.get("code")) if value is not None
    ).lower()
    if not any(phrase in text for phrase in _PHRASES):
        return None
    window = _int(fields.get("n_ctx")) or _first(_WINDOW, text)
    prompt = _int(fields.get("n_prompt_tokens")) or _first(_PROMPT, text)
    if prompt is not None and window is not None and prompt < window:
        return None  # the prompt fits: only the output limit did not (vLLM's "max_tokens is too large")
    sizes = f" ({prompt} tokens > {window})" if prompt is not None and window is not None else ""
    return EngineError(
        f"Your input exceeds the context window of this model{sizes}. Please adjust your input and try "
        f"again. The upstream said: {detail}",
        code=CODE,
    )


def _error_fields(data: bytes) -> dict[str, Any]:
    """The error object of a JSON error body (`{"error": {...}}` or the object itself), else {}."""
    try:
        decoded = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return {}
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), dict):
        decoded = decoded["error"]
    return decoded if isinstance(decoded, dict) else {}


def _first(patterns: tuple[re.Pattern[str], ...], text: str) -> int | None:
    for pattern in patterns:
        match = pattern.search(text)
        if match:
            return int(match.group(1))
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def message_of(error: Any) -> str:
    """An error object's message (its `message`, else the whole value as JSON), cut short."""
    if isinstance(error, dict):
        error = error.get("message") or error.get("error") or error
    text = error if isinstance(error, str) else msgspec.json.encode(error).decode("utf-8", "replace")
    text = text.strip() or "no details"
    return text if len(text) <= MAX_ERROR_MESSAGE_CHARS else text[:MAX_ERROR_MESSAGE_CHARS] + "…"


def error_text(data: bytes) -> str:
    """The message of an error payload: JSON in any of the usual shapes, or plain text."""
    try:
        decoded = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return message_of(data.decode("utf-8", "replace"))
    if isinstance(decoded, dict) and "error" in decoded:
        return message_of(decoded["error"])
    return message_of(decoded)


def answer_detail(data: bytes, reason: str | None) -> str:
    """What an error answer says: its body's message, else the HTTP reason phrase."""
    return error_text(data) if data.strip() else reason or "no details"


def upstream_error(data: bytes) -> EngineError:
    """An upstream error body as an EngineError: context_length_exceeded or upstream_error."""
    detail = error_text(data)
    overflow = context_overflow(data, detail)
    return overflow or EngineError(f"the upstream failed the generation: {detail}", code="upstream_error")
