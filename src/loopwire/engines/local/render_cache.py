"""A lane's rendered prompt, extended by the new items only: render and tokenize the delta, append its ids.

Owns the incremental render and the checks that keep it equal to a full render: the template renders the
new messages inside a window (the conversation's first message, the last cached one, the new ones); the
window's rendered prefix must be unchanged, the cut must fall on an added token (the tokenizer splits there,
so the delta tokenizes alone exactly as inside the whole text), and the template must have passed the
append-only probe (a scripted conversation rendered both ways). Anything else is a full render, counted by
reason. Must not run the model, hold KV caches or parse model output.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ...protocol.context import Context
from ...protocol.items import (
    CustomToolCall,
    FunctionCall,
    FunctionCallOutput,
    InputItem,
    Message,
    Reasoning,
)
from ..base import EngineCount, ToolSpec
from ..common.chat_messages import ChatMessage
from ..common.tool_names import ChatToolNames
from .messages import build_messages, build_tools
from .template import Template

History = Sequence[InputItem] | Context

TAIL_CHARS = 64
"""How much of the rendered text's end a prefix keeps for the boundary and window checks."""


@dataclass(frozen=True, slots=True)
class RenderedPrefix:
    """The render of a lane's history (no generation prompt) as its ids `parent_ids[:length]`."""

    key: tuple[str, str]
    """(instructions, tools as JSON): a change in either re-renders everything."""
    items: int
    """History items covered."""
    first: ChatMessage | None
    last: ChatMessage | None
    messages: int
    open_assistant: bool
    """The last item (past reasoning) was the model's: a function call that follows joins its message."""
    length: int
    tail: str


@dataclass(slots=True)
class Rendered:
    prompt: list[int]
    prefix: RenderedPrefix | None
    """What the next turn of the lane extends; None when this render cannot be extended."""


class Fallback(Exception):
    """The cached render cannot be extended; the reason labels the counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


PROBE_SPAN = 4
"""Turns of up to this many items are probed from every cut of the script."""


PROBE_TOOL = ToolSpec(
    "read_file", "Read a file.", {"type": "object", "properties": {"path": {"type": "string"}}}
)


def _probe_items() -> list[InputItem]:
    def call(n: int) -> FunctionCall:
        return FunctionCall(call_id=f"call_{n}", name="read_file", arguments=f'{{"path": "f{n}.py"}}')

    return [
        Message(role="user", content="Fix the failing test."),
        Reasoning(id="rs_1", summary=[{"type": "summary_text", "text": "Look first."}]),
        call(1),
        FunctionCallOutput(call_id="call_1", output="def f():\n    return 1\n"),
        Message(role="assistant", content="It returns 1."),
        call(2),
        call(3),
        FunctionCallOutput(call_id="call_2", output="x = 2"),
        FunctionCallOutput(call_id="call_3", output="y = 3"),
        Message(role="developer", content="Be brief."),
        Message(role="user", content="Now run it."),
        Message(role="assistant", content="Done."),
    ]


class IncrementalRenderer:
    """One per engine. `counts` maps (path, reason) to turns: ("appended", ""), ("full", why there was
    nothing to extend) and ("fallback", why a cached render could not be extended)."""

    def __init__(self, template: Template, *, enabled: bool = True) -> None:
        self.template = template
        self.enabled = enabled
        self.counts: Counter[tuple[str, str]] = Counter()
        self._append_only: dict[tuple[str, bool], bool] = {}

    def render(
        self,
        history: History,
        instructions: str | None,
        tools: Sequence[ToolSpec],
        *,
        generate: bool,
        parent: RenderedPrefix | None,
        parent_ids: Sequence[int] = (),
        count: bool = True,
    ) -> Rendered:
        names = ChatToolNames(tools)
        built_tools = build_tools(tools, names)
        key = (instructions or "", json.dumps(built_tools, sort_keys=True))
        if self.enabled and parent is not None and len(parent_ids) >= parent.length:
            try:
                if parent.key != key:
                    raise Fallback("instructions_or_tools")
                if not self.append_only(built_tools):
                    raise Fallback("template_not_append_only")
                rendered = self._extend(history, built_tools, names, key, generate, parent, parent_ids)
            except Fallback as why:
                path, reason = "fallback", why.reason
            else:
                if count:
                    self.counts["appended", ""] += 1
                return rendered
        else:
            path = "full"
            reason = "disabled" if not self.enabled else "no_render_state" if parent is None else "evicted"
        if count:
            self.counts[path, reason] += 1
        return self.full(history, instructions, built_tools, names, key, generate)

    def counters(self) -> list[EngineCount]:
        """Turns by how their prompt was rendered: appended to the lane's cached render, full (nothing to
        extend), or fallback (a cached render the template or tokenizer would not let us extend)."""
        return [
            EngineCount(
                "loopwire_local_renders_total",
                "Local engine prompt renders: appended to the lane's cached ids, full, or fallback to full.",
                (("path", path), ("reason", reason)),
                float(n),
            )
            for (path, reason), n in list(self.counts.items())
        ]

    def full(
        self,
        history: History,
        instructions: str | None,
        built_tools: list[dict[str, Any]],
        names: ChatToolNames,
        key: tuple[str, str],
        generate: bool,
    ) -> Rendered:
        template = self.template
        messages = build_messages(history, instructions, names)
        text = template.text(messages, built_tools, generate=False)
        if not generate:
            ids = template.encode(text)
            return Rendered(ids, self._prefix(key, history, messages, text, len(ids)))
        prompt_text = template.text(messages, built_tools, generate=True)
        ids = template.encode(prompt_text)
        suffix = prompt_text[len(text) :] if prompt_text.startswith(text) else None
        if suffix is None or not self._cuts_cleanly(text, suffix):
            return Rendered(ids, None)
        suffix_ids = template.encode(suffix) if suffix else []
        length = len(ids) - len(suffix_ids)
        if ids[length:] != suffix_ids:
            return Rendered(ids, None)
        return Rendered(ids, self._prefix(key, history, messages, text, length))

    def warm(self) -> None:
        """Run the append-only probe for both templates a turn may use (without tools, and with): ~0.3 s
        on a busy 2-core CPU, better spent at startup than on a first turn."""
        if self.enabled:
            self.append_only([])
            self.append_only(build_tools([PROBE_TOOL], ChatToolNames([PROBE_TOOL])))

    def append_only(self, tools: list[dict[str, Any]]) -> bool:
        """Whether window renders of the probe conversation, turn by turn, equal its full renders: a
        template that rewrites earlier turns (drops old reasoning, regroups messages) fails it."""
        probe_key = (self.template.source_for(tools), bool(tools))
        known = self._append_only.get(probe_key)
        if known is None:
            known = self._append_only[probe_key] = self._probe(tools)
        return known

    def _probe(self, tools: list[dict[str, Any]]) -> bool:
        items = _probe_items()
        names = ChatToolNames([PROBE_TOOL])
        for instructions in ("You are a coding agent.", None):
            key = (instructions or "", json.dumps(tools, sort_keys=True))
            try:  # renders[n] is the first n items (a template refuses an empty conversation)
                renders = [
                    None,
                    *(
                        self.full(items[:n], instructions, tools, names, key, True)
                        for n in range(1, len(items) + 1)
                    ),
                ]
            except Exception:  # a template that refuses part of the script: never extend its renders
                return False
            for cut in range(1, len(items)):
                base = renders[cut]
                if base is None or base.prefix is None:
                    continue
                for end in range(cut + 1, min(cut + PROBE_SPAN, len(items)) + 1):
                    try:
                        step = self._extend(items[:end], tools, names, key, True, base.prefix, base.prompt)
                    except Exception:  # Fallback included: the checks caught it, as they would live
                        continue
                    whole = renders[end]
                    if whole is None or step.prompt != whole.prompt:
                        return False
        return True

    def _extend(
        self,
        history: History,
        tools: list[dict[str, Any]],
        names: ChatToolNames,
        key: tuple[str, str],
        generate: bool,
        parent: RenderedPrefix,
        parent_ids: Sequence[int],
    ) -> Rendered:
        template = self.template
        new_items = _items_from(history, parent.items)
        if parent.open_assistant and _first_is_call(new_items):
            raise Fallback("joins_last_message")
        delta_messages = build_messages(new_items, None, names)
        window = [m for m in (parent.first, parent.last) if m is not None]
        if parent.messages == 1:
            window = window[:1]
        try:
            window_text = template.text(window, tools, generate=False) if window else ""
            text = template.text([*window, *delta_messages], tools, generate=False)
        except Exception as error:  # a template that refuses a window (e.g. strict role alternation)
            raise Fallback("window_refused") from error
        if not text.startswith(window_text):
            raise Fallback("prefix_changed")
        delta = text[len(window_text) :]
        if delta and not self._cuts_cleanly(parent.tail, delta):
            raise Fallback("token_boundary")
        ids = [*parent_ids[: parent.length], *(template.encode(delta) if delta else ())]
        messages = parent.messages + len(delta_messages)
        last = delta_messages[-1] if delta_messages else parent.last
        first = parent.first if parent.first is not None else (delta_messages[0] if delta_messages else None)
        tail = (parent.tail + delta)[-TAIL_CHARS:]
        prefix = RenderedPrefix(
            key, len(history), first, last, messages, _open_assistant(new_items, parent), len(ids), tail
        )
        if not generate:
            return Rendered(ids, prefix)
        prompt_text = template.text([*window, *delta_messages], tools, generate=True)
        if not prompt_text.startswith(text):
            raise Fallback("prefix_changed")
        suffix = prompt_text[len(text) :]
        if suffix and not self._cuts_cleanly(tail, suffix):
            raise Fallback("token_boundary")
        return Rendered([*ids, *(template.encode(suffix) if suffix else ())], prefix)

    def _prefix(
        self,
        key: tuple[str, str],
        history: History,
        messages: list[ChatMessage],
        text: str,
        length: int,
    ) -> RenderedPrefix:
        return RenderedPrefix(
            key,
            len(history),
            messages[0] if messages else None,
            messages[-1] if messages else None,
            len(messages),
            _open_assistant(history, None),
            length,
            text[-TAIL_CHARS:],
        )

    def _cuts_cleanly(self, before: str, after: str) -> bool:
        """Text split here tokenizes as the two halves do alone: an added token sits on the cut."""
        special = self.template.special
        return not before or not after or before.endswith(special) or after.startswith(special)


def _items_from(history: History, start: int) -> list[InputItem]:
    if isinstance(history, Context):
        return history.items_from(start)  # walks the newest segments only, no full copy
    return list(history[start:])


def _first_is_call(items: Sequence[InputItem]) -> bool:
    for item in items:
        if not isinstance(item, Reasoning):
            return isinstance(item, FunctionCall | CustomToolCall)
    return False


def _newest_first(history: History) -> Iterator[InputItem]:
    if isinstance(history, Context):
        for segment in history.reversed_segments():
            yield from reversed(segment)
    else:
        yield from reversed(history)


def _open_assistant(items: History, parent: RenderedPrefix | None) -> bool:
    for item in _newest_first(items):
        if isinstance(item, Reasoning):
            continue
        return isinstance(item, FunctionCall | CustomToolCall) or (
            isinstance(item, Message) and item.role == "assistant"
        )
    return parent.open_assistant if parent is not None else False
