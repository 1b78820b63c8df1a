"""Typed conversation items and content parts, decoded straight from JSON by msgspec.

Owns the shapes of what goes into and comes out of a model turn; knows nothing of sessions or engines.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import msgspec


class InputText(msgspec.Struct, tag_field="type", tag="input_text"):
    text: str


class InputImage(msgspec.Struct, tag_field="type", tag="input_image", omit_defaults=True):
    image_url: str | None = None
    file_id: str | None = None
    detail: str = "auto"


class InputFile(msgspec.Struct, tag_field="type", tag="input_file", omit_defaults=True):
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None


class OutputText(msgspec.Struct, tag_field="type", tag="output_text"):
    text: str
    annotations: list[Any] = msgspec.field(default_factory=list)
    logprobs: list[Any] = msgspec.field(default_factory=list)


class Refusal(msgspec.Struct, tag_field="type", tag="refusal"):
    refusal: str


ContentPart = InputText | InputImage | InputFile | OutputText | Refusal
Role = Literal["user", "system", "developer", "assistant"]


class Message(msgspec.Struct, tag_field="type", tag="message", omit_defaults=True):
    role: Role
    content: str | list[ContentPart]
    id: str | None = None
    status: str | None = None
    phase: str | None = None


class FunctionCall(msgspec.Struct, tag_field="type", tag="function_call", omit_defaults=True):
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutput(msgspec.Struct, tag_field="type", tag="function_call_output", omit_defaults=True):
    call_id: str
    output: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class Reasoning(msgspec.Struct, tag_field="type", tag="reasoning", omit_defaults=True):
    id: str
    summary: list[Any] = msgspec.field(default_factory=list)
    encrypted_content: str | None = None
    content: list[Any] | None = None
    status: str | None = None


class ItemReference(msgspec.Struct, tag_field="type", tag="item_reference"):
    id: str


class Compaction(msgspec.Struct, tag_field="type", tag="compaction", omit_defaults=True):
    encrypted_content: str
    id: str | None = None


InputItem = Message | FunctionCall | FunctionCallOutput | Reasoning | ItemReference | Compaction
OutputItem = Message | FunctionCall | Reasoning | Compaction


def as_listed(item: InputItem) -> InputItem:
    """An item as `input_items` lists it: message content as a list of parts, and a status on every item
    that has one, as the SDK's item types require. Items are stored as the client sent them."""
    if isinstance(item, Message):
        content = item.content
        if isinstance(content, str):
            content = [OutputText(text=content)] if item.role == "assistant" else [InputText(text=content)]
        return msgspec.structs.replace(item, content=content, status=item.status or "completed")
    if isinstance(item, FunctionCall | FunctionCallOutput) and item.status is None:
        return msgspec.structs.replace(item, status="completed")
    return item


_ITEM_OVERHEAD = 64
"""Bytes charged per item beyond its text, for the structure around it."""


def approx_size(items: Iterable[InputItem | OutputItem]) -> int:
    """Roughly the bytes of text the items hold: cheap (no encoding), for memory accounting only."""
    total = 0
    for item in items:
        total += _ITEM_OVERHEAD
        if isinstance(item, Message):
            total += len(text_of(item.content))
        elif isinstance(item, FunctionCall):
            total += len(item.arguments) + len(item.name)
        elif isinstance(item, FunctionCallOutput):
            total += len(text_of(item.output))
        elif isinstance(item, Compaction):
            total += len(item.encrypted_content)
    return total


def text_of(content: str | list[ContentPart]) -> str:
    """The plain text of a message or tool-output content, with non-text parts as short markers."""
    if isinstance(content, str):
        return content
    pieces: list[str] = []
    for part in content:
        if isinstance(part, InputText | OutputText):
            pieces.append(part.text)
        elif isinstance(part, Refusal):
            pieces.append(part.refusal)
        elif isinstance(part, InputImage):
            pieces.append("<image>")
        else:
            pieces.append("<file>")
    return "".join(pieces)
