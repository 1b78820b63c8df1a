"""Responses items and request fields into one chat-completions request (messages, tools, sampling).

Owns the mapping from the Responses shapes to the chat shapes; must not do I/O or read streamed chunks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any, cast

import msgspec

from ...protocol.items import (
    ContentPart,
    CustomToolCallOutput,
    FunctionCallOutput,
    InputFile,
    InputImage,
    InputItem,
    InputText,
    Message,
    OutputText,
    Refusal,
)
from ..base import EngineError, EngineRequest, NamedToolChoice, ToolChoice, ToolSpec
from ..common.affinity import affinity_token
from ..common.chat_messages import (
    ChatForm,
    ChatMessage,
    MessageCache,
    StandaloneItem,
    ToolCallItem,
    chat_messages,
)
from ..common.history_text import compaction_text, reasoning_text
from ..common.sampling import sampling_fields
from ..common.tool_names import ChatToolNames
from .settings import OpenAIChatSettings

_encode = msgspec.json.Encoder().encode


# -- messages ------------------------------------------------------------------------------------------


def chat_completions_form(settings: OpenAIChatSettings, names: ChatToolNames | None = None) -> ChatForm:
    """Items as the chat-completions API takes them, with these settings' roles and reasoning field, and
    calls named as `names` offers the tools (common/tool_names.py)."""
    drop = settings.reasoning == "drop"
    return ChatForm(
        standalone=partial(_standalone, settings),  # positional: the fastest call through a partial
        assistant=_assistant,
        tool_call=partial(_tool_call, names or ChatToolNames(())),
        reasoning=None if drop else reasoning_text,
        reasoning_field=settings.reasoning,
    )


def build_messages(
    history: Iterable[InputItem],
    instructions: str | None,
    settings: OpenAIChatSettings,
    names: ChatToolNames | None = None,
) -> list[ChatMessage]:
    """The chat `messages` for a turn (see common/chat_messages.py for the grouping), as dicts."""
    form = chat_completions_form(settings, names)
    return cast(list[ChatMessage], chat_messages(history, instructions, form))


def build_wire_messages(
    history: Iterable[InputItem],
    instructions: str | None,
    settings: OpenAIChatSettings,
    cache: MessageCache,
    names: ChatToolNames | None = None,
) -> list[ChatMessage | msgspec.Raw]:
    """build_messages for the wire, from `cache`: what stands for one item alone is its encoded JSON,
    translated and encoded only the first time the item is seen. Encoding the result gives exactly the
    bytes that encoding build_messages' result gives."""
    return chat_messages(history, instructions, chat_completions_form(settings, names), cache)


def _standalone(settings: OpenAIChatSettings, item: StandaloneItem) -> ChatMessage:
    if isinstance(item, Message):
        return _message(settings, item)
    if isinstance(item, FunctionCallOutput | CustomToolCallOutput):
        return {"role": "tool", "tool_call_id": item.call_id, "content": _tool_output(item)}
    return {"role": "system", "content": compaction_text(item)}


def _tool_call(names: ChatToolNames, item: ToolCallItem) -> dict[str, Any]:
    name, arguments = names.call(item)
    return {"id": item.call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _assistant(item: Message) -> ChatMessage:
    content = item.content
    text = content if isinstance(content, str) else "".join(_part_text(part) for part in content)
    return {"role": "assistant", "content": text}


def _message(settings: OpenAIChatSettings, item: Message) -> ChatMessage:
    """A user, system or developer message (the assistant's are `_assistant`'s)."""
    role = item.role
    content = item.content
    if role == "developer":
        role = settings.developer_role
    if isinstance(content, str):
        return {"role": role, "content": content}
    if role != "user" or all(_is_text(part) for part in content):
        # system and developer messages take text only; images there become the same marker text_of uses
        return {"role": role, "content": "\n".join(_part_text(part) for part in content)}
    return {"role": role, "content": [_chat_part(part) for part in content]}


def _tool_output(item: FunctionCallOutput | CustomToolCallOutput) -> str | list[dict[str, Any]]:
    output = item.output
    if isinstance(output, str):
        return output
    if all(_is_text(part) for part in output):
        return "\n".join(_part_text(part) for part in output)
    return [_chat_part(part) for part in output]


def _is_text(part: ContentPart) -> bool:
    return isinstance(part, InputText | OutputText | Refusal)


def _part_text(part: ContentPart) -> str:
    if isinstance(part, InputText | OutputText):
        return part.text
    if isinstance(part, Refusal):
        return part.refusal
    return "<image>" if isinstance(part, InputImage) else "<file>"


def _chat_part(part: ContentPart) -> dict[str, Any]:
    if isinstance(part, InputText | OutputText):
        return {"type": "text", "text": part.text}
    if isinstance(part, Refusal):
        return {"type": "text", "text": part.refusal}
    if isinstance(part, InputImage):
        if not part.image_url:
            raise EngineError(
                "an input_image given only by file_id cannot be sent to a chat-completions upstream; "
                "send image_url (an https or data: URL)",
                code="unsupported_content",
            )
        image: dict[str, Any] = {"url": part.image_url}
        if part.detail != "auto":
            image["detail"] = part.detail
        return {"type": "image_url", "image_url": image}
    file: dict[str, Any] = {}
    if part.file_data is not None:
        file["file_data"] = part.file_data
    if part.file_id is not None:
        file["file_id"] = part.file_id
    if part.filename is not None:
        file["filename"] = part.filename
    if not file:
        raise EngineError(
            "an input_file given only by file_url cannot be sent to a chat-completions upstream",
            code="unsupported_content",
        )
    assert isinstance(part, InputFile)
    return {"type": "file", "file": file}


# -- tools ---------------------------------------------------------------------------------------------


def build_tools(tools: Sequence[ToolSpec], names: ChatToolNames | None = None) -> list[dict[str, Any]]:
    """Responses function and custom tools, namespaced or not, as nested chat function tools (named and
    shaped as common/tool_names.py says)."""
    names = names or ChatToolNames(tools)
    chat_tools: list[dict[str, Any]] = []
    for tool in tools:
        function = names.function(tool)
        if tool.kind == "function" and tool.description is not None:
            function["description"] = tool.description
        if tool.kind == "function" and tool.strict is not None:
            function["strict"] = tool.strict
        chat_tools.append({"type": "function", "function": function})
    return chat_tools


def tool_fields(
    tools: Sequence[ToolSpec],
    choice: ToolChoice,
    parallel: bool,
    settings: OpenAIChatSettings,
    names: ChatToolNames | None = None,
) -> dict[str, Any]:
    """`tools`, `tool_choice` and `parallel_tool_calls`, or nothing without tools (several servers reject
    a tool_choice without tools). "auto" is every server's default with tools, so it is not sent."""
    if not tools:
        return {}
    names = names or ChatToolNames(tools)
    fields: dict[str, Any] = {}
    if isinstance(choice, NamedToolChoice):
        named = [tool for tool in tools if tool.name == choice.name and tool.kind == choice.kind]
        if not named:
            raise EngineError(
                f"tool_choice names {choice.name!r}, which is not among the tools", code="invalid_request"
            )
        if settings.named_tool_choice == "required":
            fields["tools"] = build_tools(named, names)
            fields["tool_choice"] = "required"
        else:
            fields["tools"] = build_tools(tools, names)
            flat = names.flat(named[0].name, named[0].namespace, named[0].kind)
            fields["tool_choice"] = {"type": "function", "function": {"name": flat}}
    else:
        fields["tools"] = build_tools(tools, names)
        if choice != "auto":
            fields["tool_choice"] = choice
    fields["parallel_tool_calls"] = parallel
    return fields


def response_format(text_format: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`text.format` (json_schema, json_object) as the chat API's `response_format`."""
    if not text_format:
        return None
    if text_format.get("type") == "json_schema":
        schema: dict[str, Any] = {"name": text_format.get("name") or "response"}
        for key in ("schema", "strict", "description"):
            if text_format.get(key) is not None:
                schema[key] = text_format[key]
        return {"type": "json_schema", "json_schema": schema}
    if text_format.get("type") == "json_object":
        return {"type": "json_object"}
    return None


# -- the whole request ---------------------------------------------------------------------------------


def build_body(
    request: EngineRequest, settings: OpenAIChatSettings, cache: MessageCache | None = None
) -> dict[str, Any]:
    """The chat-completions request body for one turn (always streamed). With `cache`, `messages` holds
    encoded messages (msgspec.Raw) for the wire: encode it, do not read it."""
    names = ChatToolNames(request.tools)
    messages: list[ChatMessage] | list[ChatMessage | msgspec.Raw] = (
        build_messages(request.history, request.instructions, settings, names)
        if cache is None
        else build_wire_messages(request.history, request.instructions, settings, cache, names)
    )
    body: dict[str, Any] = {
        "model": settings.model or request.model,
        "messages": messages,
        "stream": True,
    }
    if settings.include_usage:
        body["stream_options"] = {"include_usage": True}
    body.update(tool_fields(request.tools, request.tool_choice, request.parallel_tool_calls, settings, names))
    structured = response_format(request.text_format)
    if structured is not None:
        body["response_format"] = structured
    body.update(sampling_fields(request, settings.max_tokens_field))
    if request.max_output_tokens is None and settings.default_max_output_tokens:
        body[settings.max_tokens_field] = settings.default_max_output_tokens
    if request.cache_key:
        token = affinity_token(request.cache_key)
        if "prompt_cache_key" in settings.cache_key_via:
            body["prompt_cache_key"] = token
        if "user" in settings.cache_key_via:
            body["user"] = token
    for name, value in settings.extra_body.items():
        body.setdefault(name, value)
    return body


def build_headers(request: EngineRequest, settings: OpenAIChatSettings) -> dict[str, str]:
    """The per-turn headers (auth and static headers are the connection pool's)."""
    if request.cache_key and "header" in settings.cache_key_via:
        return {settings.cache_key_header: affinity_token(request.cache_key)}
    return {}


def encode_body(body: Mapping[str, Any]) -> bytes:
    return _encode(body)
