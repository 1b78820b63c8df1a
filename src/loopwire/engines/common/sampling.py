"""The sampling fields of a turn, as an upstream API takes them in its request body.

Owns which of the client's sampling fields go upstream (only those it set, so the upstream's defaults
apply otherwise); must not build the rest of a body or know an upstream's other field names.
"""

from __future__ import annotations

from typing import Any

from ..base import EngineRequest


def sampling_fields(request: EngineRequest, max_tokens_field: str) -> dict[str, Any]:
    """`temperature`, `top_p` and the output limit (named `max_tokens_field` upstream), each when set."""
    fields: dict[str, Any] = {}
    if request.temperature is not None:
        fields["temperature"] = request.temperature
    if request.top_p is not None:
        fields["top_p"] = request.top_p
    if request.max_output_tokens is not None:
        fields[max_tokens_field] = request.max_output_tokens
    return fields
