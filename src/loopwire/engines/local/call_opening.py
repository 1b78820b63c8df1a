"""What a chat template writes between the generation prompt and a tool call's JSON (loopwire's Hermes
ChatML: "\\n<tool_call>\\n"), probed once per template by rendering a scripted call both ways.

A forced call opens with exactly this text (the in-process grammar's literal; the token-id mode's prompt),
so the ids the model's KV holds after the call are the ids the next turn's render of that call starts
with, and the next turn extends them instead of re-prefilling the call. Owns the probe and its cache per
template source; must not run the model, compile grammars or hold KV state.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ...protocol.items import FunctionCall, Message
from ..base import ToolSpec
from ..common.tool_names import ChatToolNames
from .messages import build_messages, build_tools
from .render_cache import PROBE_TOOL
from .template import Template
from .tool_parser import OPEN

CALL_OPEN = OPEN + "\n"
"""The opening when a template will not say (it refuses the probe or writes no `<tool_call>`)."""


class CallOpenings:
    """One per engine: the opening text of a forced call, by the template source that renders it."""

    def __init__(self, template: Template) -> None:
        self.template = template
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()

    def text(self, tools: Sequence[ToolSpec]) -> str:
        """The opening for a turn offering `tools` (the template depends on whether tools are shown)."""
        source = self.template.source_for(build_tools(list(tools), ChatToolNames(tools)))
        with self._lock:
            known = self._known.get(source)
            if known is None:
                known = self._known[source] = self._probe()
            return known

    def _probe(self) -> str:
        names = ChatToolNames([PROBE_TOOL])
        tools = build_tools([PROBE_TOOL], names)
        asked = Message(role="user", content="Read f.py.")
        call = FunctionCall(call_id="call_1", name=PROBE_TOOL.name, arguments='{"path": "f.py"}')
        try:
            prompt = self.template.text(build_messages([asked], None, names), tools, generate=True)
            answered = self.template.text(build_messages([asked, call], None, names), tools, generate=False)
        except Exception:  # a template that refuses the probe: the plain opening
            return CALL_OPEN
        rest = answered[len(prompt) :] if answered.startswith(prompt) else ""
        end = rest.find(CALL_OPEN)
        return rest[: end + len(CALL_OPEN)] if end >= 0 else CALL_OPEN
