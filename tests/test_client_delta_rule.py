"""The client's delta rule at its edges: a delta only when the fields are unchanged and the conversation
strictly extends the previous input + output; otherwise the whole conversation without an id."""

from __future__ import annotations

from typing import Any

import pytest

from loopwire.client import LastResponse, plan_input
from loopwire.client.request import canonical_fields

TOOLS = [{"type": "function", "name": "grep", "parameters": {"type": "object", "properties": {}}}]
FIELDS = canonical_fields({"model": "sim", "instructions": "Be brief.", "tools": TOOLS, "store": False})


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


def call(call_id: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": "fc_" + call_id,
        "call_id": call_id,
        "name": "grep",
        "arguments": "{}",
    }


def result(call_id: str, output: str = "ok") -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


# previous request: [user("fix it")]; its response: [call("a")]
PREVIOUS_INPUT = [user("fix it")]
PREVIOUS_OUTPUT = [call("a")]
LAST = LastResponse("resp_1", FIELDS, PREVIOUS_INPUT + PREVIOUS_OUTPUT, stored=False)


def test_first_turn_sends_everything_without_an_id() -> None:
    plan = plan_input(None, FIELDS, [user("fix it")])
    assert plan.previous_response_id is None and not plan.delta
    assert plan.input == [user("fix it")]


def test_one_new_item_after_input_and_output_is_a_delta_of_that_item() -> None:
    conversation = [*PREVIOUS_INPUT, *PREVIOUS_OUTPUT, result("a")]
    plan = plan_input(LAST, FIELDS, conversation)
    assert plan.delta and plan.previous_response_id == "resp_1"
    assert plan.input == [result("a")]


def test_several_new_items_are_sent_in_order() -> None:
    new = [result("a", "first"), user("and also this")]
    plan = plan_input(LAST, FIELDS, [*PREVIOUS_INPUT, *PREVIOUS_OUTPUT, *new])
    assert plan.previous_response_id == "resp_1" and plan.input == new


def test_no_new_item_is_not_a_strict_extension_so_everything_is_resent() -> None:
    conversation = [*PREVIOUS_INPUT, *PREVIOUS_OUTPUT]
    plan = plan_input(LAST, FIELDS, conversation)
    assert plan.previous_response_id is None and plan.input == conversation


def test_a_shorter_conversation_is_resent_in_full() -> None:
    plan = plan_input(LAST, FIELDS, [user("fix it")])
    assert plan.previous_response_id is None and plan.input == [user("fix it")]


def test_without_the_previous_output_the_conversation_does_not_extend_it() -> None:
    conversation = [*PREVIOUS_INPUT, result("a")]  # caller dropped the function call
    plan = plan_input(LAST, FIELDS, conversation)
    assert plan.previous_response_id is None and plan.input == conversation


def test_an_edited_earlier_item_forces_full_input() -> None:
    conversation = [user("fix it, please"), *PREVIOUS_OUTPUT, result("a")]
    assert plan_input(LAST, FIELDS, conversation).previous_response_id is None


def test_a_changed_output_item_forces_full_input() -> None:
    edited = {**call("a"), "arguments": '{"pattern": "x"}'}
    assert plan_input(LAST, FIELDS, [*PREVIOUS_INPUT, edited, result("a")]).previous_response_id is None


def test_an_item_inserted_in_the_middle_forces_full_input() -> None:
    conversation = [*PREVIOUS_INPUT, user("inserted"), *PREVIOUS_OUTPUT, result("a")]
    assert plan_input(LAST, FIELDS, conversation).previous_response_id is None


@pytest.mark.parametrize(
    "changed",
    [
        {"model": "sim-2", "instructions": "Be brief.", "tools": TOOLS, "store": False},
        {"model": "sim", "instructions": "Be thorough.", "tools": TOOLS, "store": False},
        {"model": "sim", "instructions": "Be brief.", "tools": [], "store": False},
        {"model": "sim", "instructions": "Be brief.", "tools": TOOLS, "store": True},
        {"model": "sim", "instructions": "Be brief.", "tools": TOOLS, "store": False, "tool_choice": "auto"},
        {"model": "sim", "tools": TOOLS, "store": False},
    ],
    ids=["model", "instructions", "tools", "store", "added-field", "removed-field"],
)
def test_any_changed_non_input_field_forces_full_input(changed: dict[str, Any]) -> None:
    conversation = [*PREVIOUS_INPUT, *PREVIOUS_OUTPUT, result("a")]
    plan = plan_input(LAST, canonical_fields(changed), conversation)
    assert plan.previous_response_id is None and plan.input == conversation


def test_field_order_does_not_matter_but_a_mutated_tools_list_does() -> None:
    reordered = canonical_fields(
        {"store": False, "tools": TOOLS, "instructions": "Be brief.", "model": "sim"}
    )
    assert reordered == FIELDS
    tools = [dict(TOOLS[0])]
    before = canonical_fields({"model": "sim", "tools": tools})
    tools[0]["name"] = "grep2"  # the caller edits its tools list in place between turns
    assert canonical_fields({"model": "sim", "tools": tools}) != before


def test_the_delta_is_a_new_list_and_any_sequence_works() -> None:
    conversation = (*PREVIOUS_INPUT, *PREVIOUS_OUTPUT, result("a"))
    plan = plan_input(LAST, FIELDS, conversation)
    plan.input.append(user("later"))
    assert len(conversation) == 3 and plan.previous_response_id == "resp_1"
