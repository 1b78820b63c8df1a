"""The Response object as clients see it, with every field the SDK and the Open Responses spec require.

Owns the shape and defaults of a response; does not decide status transitions (the turn does).
"""

from __future__ import annotations

from typing import Any

import msgspec

from .items import OutputItem

DEFAULT_TEXT: dict[str, Any] = {"format": {"type": "text"}, "verbosity": "medium"}
DEFAULT_REASONING: dict[str, Any] = {"effort": None, "summary": None}


class InputTokensDetails(msgspec.Struct):
    cached_tokens: int
    cache_write_tokens: int = 0


class OutputTokensDetails(msgspec.Struct):
    reasoning_tokens: int = 0


class ResponseUsage(msgspec.Struct):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


RESPONSE_ERROR_CODES = frozenset(
    """server_error rate_limit_exceeded invalid_prompt data_residency_mismatch bio_policy
    misalignment_policy_violation vector_store_timeout invalid_image invalid_image_format invalid_base64_image
    invalid_image_url image_too_large image_too_small image_parse_error image_content_policy_violation
    invalid_image_mode image_file_too_large unsupported_image_media_type empty_image_file
    failed_to_download_image image_file_not_found""".split()
)
"""The codes the official SDK accepts in `response.error.code`; anything else would fail its types."""


class ResponseError(msgspec.Struct):
    code: str
    message: str


CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
"""Kept as is in a failed Response, though the SDK's types omit it: the hosted API fails a streamed response
with it, and clients key on it (Codex's `is_context_window_error` reads `response.failed`'s error.code)."""


def response_error(code: str, message: str) -> ResponseError:
    """A Response's error in the SDK's vocabulary: a specific code of ours (engine_timeout,
    upstream_error, store_unavailable, ...) becomes server_error, named at the end of the message;
    context_length_exceeded stays itself, as the hosted API sends it."""
    if code in RESPONSE_ERROR_CODES or code == CONTEXT_LENGTH_EXCEEDED:
        return ResponseError(code=code, message=message)
    return ResponseError(code="server_error", message=f"{message} [{code}]")


class IncompleteDetails(msgspec.Struct):
    reason: str


class Response(msgspec.Struct, kw_only=True):
    id: str
    object: str = "response"
    created_at: int
    completed_at: int | None = None
    status: str
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    model: str
    output: list[OutputItem | msgspec.Raw] = msgspec.field(default_factory=list)
    """Items this server made, and items passed on whole as their JSON."""
    parallel_tool_calls: bool = True
    temperature: float | None = 1.0
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[msgspec.Raw] = msgspec.field(default_factory=list)
    top_p: float | None = 1.0
    previous_response_id: str | None = None
    store: bool = True
    background: bool = False
    text: dict[str, Any] = msgspec.field(default_factory=lambda: dict(DEFAULT_TEXT))
    truncation: str = "disabled"
    usage: ResponseUsage | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_logprobs: int = 0
    reasoning: dict[str, Any] = msgspec.field(default_factory=lambda: dict(DEFAULT_REASONING))
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    service_tier: str = "default"
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    user: str | None = None


class DeletedResponse(msgspec.Struct):
    id: str
    object: str = "response.deleted"
    deleted: bool = True


class ItemList(msgspec.Struct):
    data: list[Any]
    first_id: str | None
    last_id: str | None
    has_more: bool
    object: str = "list"


class Model(msgspec.Struct):
    """A model as `GET /v1/models` lists it (the SDK's `Model`)."""

    id: str
    created: int
    owned_by: str = "loopwire"
    object: str = "model"


class ModelList(msgspec.Struct):
    data: list[Model]
    object: str = "list"


class CompactedResponse(msgspec.Struct, kw_only=True):
    id: str
    object: str = "response.compaction"
    created_at: int
    output: list[OutputItem | Any]
    usage: ResponseUsage


def usage_of(
    input_tokens: int, cached_tokens: int, output_tokens: int, reasoning_tokens: int = 0
) -> ResponseUsage:
    return ResponseUsage(
        input_tokens=input_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=cached_tokens),
        output_tokens=output_tokens,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning_tokens),
        total_tokens=input_tokens + output_tokens,
    )
