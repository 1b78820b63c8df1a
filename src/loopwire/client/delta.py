"""The delta rule: may a turn send only its new items plus `previous_response_id`, or must it resend all?

Owns one pure decision over plain data (Codex CLI's rule); knows nothing of sockets, HTTP or the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Item = dict[str, Any]


@dataclass(frozen=True, slots=True)
class LastResponse:
    """The newest response a conversation may continue from, and what it was built from."""

    response_id: str
    fields: bytes
    """The canonical encoding (sorted keys) of every non-input field of the request that produced it:
    model, instructions, tools, tool_choice, store, ... Compared byte for byte."""
    context: list[Item]
    """That request's full input (the conversation as the caller held it), then the response's output."""
    stored: bool
    """Created with `store: true`, so any connection (or HTTP) can continue from it."""


@dataclass(frozen=True, slots=True)
class InputPlan:
    """What to send: the items, and the id they continue from (None: the items are the whole input)."""

    input: list[Item]
    previous_response_id: str | None

    @property
    def delta(self) -> bool:
        return self.previous_response_id is not None


def full_input(conversation: Sequence[Item]) -> InputPlan:
    return InputPlan(list(conversation), None)


def plan_input(last: LastResponse | None, fields: bytes, conversation: Sequence[Item]) -> InputPlan:
    """Send only the new items plus `last.response_id` when every non-input field is unchanged and the
    conversation strictly extends `last.context` (same items in the same order, at least one more);
    otherwise the whole conversation without an id. Items are compared by value (==)."""
    if last is None or fields != last.fields:
        return full_input(conversation)
    known = len(last.context)
    if len(conversation) <= known:
        return full_input(conversation)
    items = list(conversation)
    if items[:known] != last.context:
        return full_input(items)
    return InputPlan(items[known:], last.response_id)
