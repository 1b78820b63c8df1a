"""What llama-cpp-python's server needs beyond the standard chat API (`dialect=llama-cpp-python`).

Owns turning one standard request body into the requests that server answers correctly (a plan), and the
body of the exact prompt-count probe; must not do I/O or read chunks.

Measured on llama-cpp-python 0.3.36 serving SmolLM2 (tests/real/test_quirks.py keeps each one honest):
- without `--chat_format chatml-function-calling` the `tools` are dropped silently; the engine fails a
  forced tool_choice that brought no call, so that shows (any dialect);
- with it, tools reach the model only under a tool_choice: no tool_choice (or "none") drops them from the
  prompt; a named choice works, streamed, grammar-constrained; "required" is an HTTP 500 (an assertion in
  the handler); "auto" lets the model pick a call or a message by grammar, but a message comes back
  empty (its follow-up grammar admits only a function name or the end), and a streamed "auto" that picks a
  call fails after the 200: an empty stream;
- an assistant message with `content: null` beside `tool_calls` is an HTTP 500 (translate sends "");
- its template renders a `tool` message as the role header alone: the tool's output never reaches the
  model. Here each becomes a user message that says which call it answers, by the function's name as the
  template shows the call (`functions.NAME`), never by the call id: the server's ids end in a random
  completion id, which would make the same conversation a different prompt every time (and a greedy
  model's next answer differ between runs of it);
- streams carry no usage and ignore `stream_options`: the probe asks for the count afterwards.

So under this dialect: "required" with one tool becomes that tool named; "required" among several, and
"auto", go non-streamed with an explicit "auto" (a call comes back whole; required then checks one came);
an "auto" answer that came back empty is asked again, streamed, without the tools (the model has chosen to
answer in text). A streamed turn is followed by the probe: the same body, non-streamed, one token, whose
`usage.prompt_tokens` is the server's own count (its KV already holds that prompt, so it costs one token).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from ..base import EngineRequest, NamedToolChoice
from .settings import OpenAIChatSettings

_TOOL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls")
ChatMessage = dict[str, Any]


@dataclass(frozen=True, slots=True)
class TurnPlan:
    """body: the first request. text_fallback: sent when the first came back with neither text nor a
    call (llama-cpp-python's "auto" chose a message). probe: ask for the exact prompt count afterwards
    when the answer carried none."""

    body: dict[str, Any]
    text_fallback: dict[str, Any] | None = None
    probe: bool = False


def plan_turn(body: dict[str, Any], request: EngineRequest, settings: OpenAIChatSettings) -> TurnPlan:
    if settings.dialect != "llama-cpp-python":
        return TurnPlan(body)
    messages = body["messages"]
    calls = _calls_by_id(messages)
    body = {**body, "messages": [_visible(message, calls) for message in messages]}
    tools = body.get("tools")
    choice = request.tool_choice
    if not tools or choice == "none":
        return TurnPlan(body, probe=True)
    if isinstance(choice, NamedToolChoice) or (choice == "required" and len(tools) == 1):
        if body.get("tool_choice") == "required":  # named_tool_choice=required sent the one tool alone
            return TurnPlan({**body, "tool_choice": _named(tools[0]["function"]["name"])}, probe=True)
        return TurnPlan(body, probe=True)  # the object form, under the flat name translate gave it
    whole = _not_streamed({**body, "tool_choice": "auto"})
    if choice == "required":
        return TurnPlan(whole)
    text = {name: value for name, value in body.items() if name not in _TOOL_FIELDS}
    return TurnPlan(whole, text_fallback=text, probe=False)


def probe_body(body: dict[str, Any], settings: OpenAIChatSettings) -> dict[str, Any]:
    """The same prompt, non-streamed, one token: the answer's usage counts the prompt exactly."""
    return {**_not_streamed(body), settings.max_tokens_field: 1}


def _calls_by_id(messages: list[ChatMessage | msgspec.Raw]) -> dict[str, str]:
    """Each call id of the assistant messages, as its output's message names the call: `functions.NAME`,
    with its place among that message's calls when there are several."""
    named: dict[str, str] = {}
    for message in messages:
        if isinstance(message, msgspec.Raw) or not message.get("tool_calls"):
            continue  # assistant messages are never encoded whole; their tool_calls entries may be
        entries = [
            msgspec.json.decode(entry) if isinstance(entry, msgspec.Raw) else entry
            for entry in message["tool_calls"]
        ]
        for place, entry in enumerate(entries, 1):
            name = f"functions.{entry.get('function', {}).get('name', '')}"
            if len(entries) > 1:
                name += f" (call {place} of {len(entries)})"
            named[str(entry.get("id", ""))] = name
    return named


def _visible(message: ChatMessage | msgspec.Raw, calls: dict[str, str]) -> ChatMessage | msgspec.Raw:
    """A tool message as a user message its template renders (others unchanged, encoded or not)."""
    if isinstance(message, msgspec.Raw):
        if b'"role":"tool"' not in bytes(message):
            return message
        decoded = msgspec.json.decode(message)
        if not isinstance(decoded, dict) or decoded.get("role") != "tool":
            return message
        message = decoded
    if message.get("role") != "tool":
        return message
    content = message.get("content")
    text = content if isinstance(content, str) else msgspec.json.encode(content).decode()
    call_id = str(message.get("tool_call_id", ""))
    call = calls.get(call_id, f"tool call {call_id}")  # a call the history does not hold: its id
    return {"role": "user", "content": f"Output of {call}:\n{text}"}


def _named(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


def _not_streamed(body: dict[str, Any]) -> dict[str, Any]:
    whole = {name: value for name, value in body.items() if name != "stream_options"}
    whole["stream"] = False
    return whole
