"""Streamed model text into text deltas and Hermes/Qwen-style `<tool_call>{json}</tool_call>` calls.

Owns the markers, the hold-back of a possible marker prefix, and call ids; must not tokenize or run the model.
"""

from __future__ import annotations

import json
import secrets
import string

from ..base import EngineDelta, TextDelta, ToolArgumentsDelta, ToolCallStart

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
_ALPHABET = string.ascii_letters + string.digits


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def _marker_prefix_at_end(text: str, marker: str) -> int:
    """The length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


class ToolCallParser:
    """Text outside the markers streams through as it comes, except a tail that could begin a marker and
    whitespace right before a call (the template writes its own separator when the call comes back as
    history). A block whose JSON is not `{"name": ..., "arguments": ...}` is passed on as text."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.calls = 0
        self._pending = ""  # text not yet emitted
        self._inside = False

    def feed(self, text: str) -> list[EngineDelta]:
        if not self.enabled:
            return [TextDelta(text)] if text else []
        self._pending += text
        out: list[EngineDelta] = []
        while True:
            if self._inside:
                end = self._pending.find(CLOSE)
                if end < 0:
                    return out
                body = self._pending[:end]
                self._pending = self._pending[end + len(CLOSE) :]
                self._inside = False
                out.extend(self._call(body))
                continue
            start = self._pending.find(OPEN)
            if start >= 0:
                before = self._pending[:start].rstrip()
                if before:
                    out.append(TextDelta(before))
                self._pending = self._pending[start + len(OPEN) :]
                self._inside = True
                continue
            hold = _marker_prefix_at_end(self._pending, OPEN)
            emit = self._pending[: len(self._pending) - hold]
            stripped = emit.rstrip()
            hold += len(emit) - len(stripped)
            if stripped:
                out.append(TextDelta(stripped))
            self._pending = self._pending[len(self._pending) - hold :] if hold else ""
            return out

    def finish(self) -> list[EngineDelta]:
        """The rest: an unterminated call as text; trailing whitespace only when no call came before it."""
        rest, self._pending = self._pending, ""
        if self._inside:
            self._inside = False
            return [TextDelta(OPEN + rest)]
        if not self.enabled:
            return []
        if self.calls and not rest.strip():
            return []
        return [TextDelta(rest)] if rest else []

    def _call(self, body: str) -> list[EngineDelta]:
        try:
            parsed = json.loads(body)
        except json.JSONDecodeError:
            parsed = None
        name = parsed.get("name") if isinstance(parsed, dict) else None
        if not isinstance(parsed, dict) or not isinstance(name, str) or not name:
            return [TextDelta(OPEN + body + CLOSE)]
        arguments = parsed.get("arguments", parsed.get("parameters", {}))
        encoded = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        self.calls += 1
        return [ToolCallStart(call_id=new_call_id(), name=name), ToolArgumentsDelta(encoded)]
