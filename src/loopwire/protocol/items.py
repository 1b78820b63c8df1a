"""Typed conversation items and content parts, decoded straight from JSON by msgspec.

Owns the shapes of what goes into and comes out of a model turn: the items a model reads and writes typed,
every other item type of the SDK carried whole, and each decoded item's JSON kept so no field is lost.
Knows nothing of connection state or engines.
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


class SummaryText(msgspec.Struct, tag_field="type", tag="summary_text"):
    """One part of a reasoning item's summary."""

    text: str


class ReasoningText(msgspec.Struct, tag_field="type", tag="reasoning_text"):
    """A reasoning item's raw reasoning text."""

    text: str


ContentPart = InputText | InputImage | InputFile | OutputText | Refusal
Role = Literal["user", "system", "developer", "assistant"]


class Item(msgspec.Struct, tag_field="type", omit_defaults=True, dict=True):
    """Base of every item. `dict=True` lets an item decoded from a client keep the JSON it was sent as
    (see `keep_sent`), so fields this server does not model survive the store, listing and upstreams."""


class Message(Item, tag="message"):
    role: Role
    content: str | list[ContentPart]
    id: str | None = None
    status: str | None = None
    phase: str | None = None


class FunctionCall(Item, tag="function_call"):
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None
    namespace: str | None = None


class FunctionCallOutput(Item, tag="function_call_output"):
    call_id: str
    output: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class CustomToolCall(Item, tag="custom_tool_call"):
    """A call of a custom tool: `input` is the model's free text (checked by no schema)."""

    call_id: str
    name: str
    input: str
    id: str | None = None
    status: str | None = None
    namespace: str | None = None


class CustomToolCallOutput(Item, tag="custom_tool_call_output"):
    call_id: str
    output: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class Reasoning(Item, tag="reasoning", omit_defaults=False):
    """`summary` is always sent (the SDK requires it, even empty)."""

    id: str | None = None
    summary: list[Any] = msgspec.field(default_factory=list)
    encrypted_content: str | None = None
    content: list[Any] | None = None
    status: str | None = None


class ItemReference(Item, tag="item_reference"):
    id: str


class Compaction(Item, tag="compaction"):
    encrypted_content: str
    id: str | None = None


class HostedItem(Item):
    """An item of a type this server carries but does not interpret (hosted tool calls, shell and patch
    calls, MCP items, ...): only what call-id checks and references need is typed; the rest is the JSON
    it was sent as, kept whole."""

    id: str | None = None
    call_id: str | None = None
    status: str | None = None


def _hosted_item(tag: str) -> type[HostedItem]:
    cls = msgspec.defstruct("Hosted_" + tag, [], bases=(HostedItem,), tag_field="type", tag=tag)
    assert issubclass(cls, HostedItem)
    return cls


HOSTED_ITEMS: dict[str, type[HostedItem]] = {
    tag: _hosted_item(tag)
    for tag in """file_search_call web_search_call computer_call computer_call_output tool_search_call
    tool_search_output additional_tools configuration_update image_generation_call code_interpreter_call
    local_shell_call local_shell_call_output shell_call shell_call_output apply_patch_call
    apply_patch_call_output mcp_list_tools mcp_approval_request mcp_call compaction_trigger program
    program_output""".split()
}
"""Every other item type of the SDK's input and output item unions."""


class McpApprovalResponse(HostedItem, tag="mcp_approval_response"):
    """Answers the `mcp_approval_request` whose `id` is `approval_request_id`."""

    approval_request_id: str | None = None


CALL_TYPES = frozenset(
    """function_call custom_tool_call computer_call local_shell_call shell_call apply_patch_call program
    tool_search_call""".split()
)
"""Items a model emits that a client answers with an output carrying the same `call_id`."""

OUTPUT_TYPES = frozenset(
    """function_call_output custom_tool_call_output computer_call_output local_shell_call_output
    shell_call_output apply_patch_call_output program_output""".split()
)

_TYPED: tuple[type[Item], ...] = (
    Message,
    FunctionCall,
    FunctionCallOutput,
    CustomToolCall,
    CustomToolCallOutput,
    Reasoning,
    ItemReference,
    Compaction,
    McpApprovalResponse,
    *HOSTED_ITEMS.values(),
)
_UNION: Any = _TYPED[0]
for _cls in _TYPED[1:]:
    _UNION = _UNION | _cls

InputItem = Item
"""Any item (the union of `_TYPED`, decoded with `decode_item`); engines check the types they use."""
OutputItem = Item
ITEM_TYPES = frozenset(item_type for item_type in (cls.__struct_config__.tag for cls in _TYPED) if item_type)

_item_decoder: msgspec.json.Decoder[Item] = msgspec.json.Decoder(_UNION)
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_dict_decoder = msgspec.json.Decoder(dict[str, Any])
_encode = msgspec.json.Encoder().encode


def item_type(item: Item) -> str:
    tag = type(item).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def decode_item(raw: msgspec.Raw | bytes) -> Item:
    """One item, keeping the JSON it came as: a copy of its own bytes, since a Raw slice would keep the
    whole request it was cut from alive for as long as the item is cached. Raises
    msgspec.ValidationError (an unknown `type` names `$.type`) or msgspec.DecodeError."""
    data = bytes(raw)
    item = _item_decoder.decode(data)
    keep_sent(item, msgspec.Raw(data))
    return item


def decode_items(data: bytes) -> list[Item]:
    """A JSON list of items (as `encode_items` wrote it)."""
    return [decode_item(raw) for raw in _raw_list_decoder.decode(data)]


def keep_sent(item: Item, raw: msgspec.Raw) -> None:
    setattr(item, "_sent", raw)  # noqa: B010 (an attribute of the instance dict, not a field)


def sent_json(item: Item) -> msgspec.Raw | None:
    """The JSON the item was decoded from, when it was decoded (None for items this server made)."""
    sent: msgspec.Raw | None = getattr(item, "_sent", None)
    return sent


def wire(item: Item) -> msgspec.Raw | Item:
    """What to encode for the item: the JSON it came as (every field kept), else the item itself."""
    sent = sent_json(item)
    return item if sent is None else sent


def encode_items(items: Iterable[Item]) -> bytes:
    return _encode([wire(item) for item in items])


def set_id(item: Item, item_id: str) -> None:
    """Give an item without an id its id, in the typed view and in the JSON it keeps."""
    item.id = item_id  # type: ignore[attr-defined]
    sent = sent_json(item)
    if sent is None:
        return
    data = bytes(sent)
    if b'"id"' not in data:  # the common case: prepend the key, no re-encoding of the item
        keep_sent(item, msgspec.Raw(b'{"id":' + _encode(item_id) + b"," + data[1:]))
        return
    body = _dict_decoder.decode(data)  # an explicit "id": null, or "id" inside some value
    body["id"] = item_id
    keep_sent(item, msgspec.Raw(_encode(body)))


_ISSUES: dict[type[Item], str] = {
    cls: "id" if tag == "mcp_approval_request" else "call_id"
    for cls in _TYPED
    if (tag := cls.__struct_config__.tag) in CALL_TYPES or tag == "mcp_approval_request"
}
"""Per item class, the field holding the call id it issues."""
_ANSWERS: dict[type[Item], str] = {
    cls: "approval_request_id" if cls is McpApprovalResponse else "call_id"
    for cls in _TYPED
    if cls.__struct_config__.tag in OUTPUT_TYPES or cls is McpApprovalResponse
}
"""Per item class, the field holding the call id it answers."""


def call_id_of(item: Item) -> str | None:
    """The call id an item issues (a call a client may answer), else None."""
    field = _ISSUES.get(type(item))
    call_id: str | None = getattr(item, field, None) if field is not None else None
    return call_id


def answered_call_id(item: Item) -> str | None:
    """The call id an output item answers, else None."""
    field = _ANSWERS.get(type(item))
    call_id: str | None = getattr(item, field, None) if field is not None else None
    return call_id


def as_listed(item: Item) -> msgspec.Raw | Item:
    """An item as `input_items` lists it: every field it was sent with, message content as a list of
    parts, and an id and a status on every item, as the SDK's item types require."""
    listed = _normalized(item)
    sent = sent_json(item)
    if sent is None:
        return listed
    body = _dict_decoder.decode(sent)
    body.update(_dict_decoder.decode(_encode(listed)))
    return msgspec.Raw(_encode(body))


def _normalized(item: Item) -> Item:
    if isinstance(item, Message):
        content = item.content
        if isinstance(content, str):
            content = [OutputText(text=content)] if item.role == "assistant" else [InputText(text=content)]
        return msgspec.structs.replace(item, content=content, status=item.status or "completed")
    if getattr(item, "status", "") is None and not isinstance(item, Reasoning):
        return msgspec.structs.replace(item, status="completed")
    return item


_ITEM_OVERHEAD = 64
"""Bytes charged per item beyond its text, for the structure around it."""


def approx_size(items: Iterable[Item]) -> int:
    """Roughly the bytes of text the items hold: cheap (no encoding), for memory accounting only."""
    total = 0
    for item in items:
        total += _ITEM_OVERHEAD
        if isinstance(item, Message):
            total += len(text_of(item.content))
        elif isinstance(item, FunctionCall):
            total += len(item.arguments) + len(item.name)
        elif isinstance(item, FunctionCallOutput | CustomToolCallOutput):
            total += len(text_of(item.output))
        elif isinstance(item, CustomToolCall):
            total += len(item.input) + len(item.name)
        elif isinstance(item, Compaction | Reasoning):
            total += len(item.encrypted_content or "")
        sent = sent_json(item)
        if sent is not None:
            total += len(sent)
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
