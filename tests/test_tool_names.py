"""engines/common/tool_names.py: the flat functions a chat model is offered, and its calls mapped back."""

from __future__ import annotations

from loopwire.engines.base import Finished, TextDelta, ToolArgumentsDelta, ToolCallStart, ToolSpec, Usage
from loopwire.engines.common.tool_names import CallRestorer, ChatToolNames
from loopwire.protocol.items import CustomToolCall, FunctionCall

TOOLS = (
    ToolSpec("crm__lookup"),  # a top-level tool that already has the name the namespaced one would get
    ToolSpec("lookup", namespace="crm"),
    ToolSpec("lookup", namespace="billing"),
    ToolSpec("apply_patch", "Edit files.", kind="custom", format={"type": "text"}),
    ToolSpec("note", kind="custom", namespace="crm"),
)


def test_flat_names_are_unique_and_map_back() -> None:
    names = ChatToolNames(TOOLS)
    flat = [names.flat(tool.name, tool.namespace, tool.kind) for tool in TOOLS]
    assert flat == ["crm__lookup", "crm__lookup_2", "billing__lookup", "apply_patch", "crm__note"]
    assert [names.spec(name) for name in flat] == list(TOOLS)
    assert names.function(TOOLS[3])["parameters"]["required"] == ["input"]
    assert names.call(CustomToolCall(call_id="c", name="note", input="hi", namespace="crm")) == (
        "crm__note",
        '{"input": "hi"}',
    )
    assert names.call(FunctionCall(call_id="c", name="lookup", arguments="{}", namespace="crm")) == (
        "crm__lookup_2",
        "{}",
    )


def test_restorer_rebuilds_namespaced_and_custom_calls_across_batches() -> None:
    restorer = CallRestorer(ChatToolNames(TOOLS))
    first = restorer.restore(
        [
            TextDelta("ok"),
            ToolCallStart("c1", "crm__lookup_2"),
            ToolArgumentsDelta('{"q":'),
            ToolArgumentsDelta(' "x"}'),
            ToolCallStart("c2", "apply_patch"),
            ToolArgumentsDelta('{"input": "line 1\\n'),
        ]
    )
    assert first == [
        TextDelta("ok"),
        ToolCallStart("c1", "lookup", "function", "crm"),
        ToolArgumentsDelta('{"q":'),
        ToolArgumentsDelta(' "x"}'),
        ToolCallStart("c2", "apply_patch", "custom", None),
    ]
    finished = Finished(Usage())
    second = restorer.restore([ToolArgumentsDelta('line 2"}'), finished])
    assert second == [ToolArgumentsDelta("line 1\nline 2"), finished]
    # a model that ignored the argument's shape: its text is the input as it is
    odd = CallRestorer(ChatToolNames(TOOLS))
    assert odd.restore([ToolCallStart("c3", "crm__note"), ToolArgumentsDelta("not json"), finished])[1:] == [
        ToolArgumentsDelta("not json"),
        finished,
    ]
