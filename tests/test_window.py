"""The context-window rule (core/window.py) at its edges, with token counts provided: what truncation may
drop, when compaction runs, and when a turn is refused with context_length_exceeded. One case runs the rule
with the sim engine's own count_tokens through plan_turn + fit_plan."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from loopwire.core.cache import CachedResponse
from loopwire.core.plan import fit_plan, plan_turn, window_rule
from loopwire.core.window import WindowRule, compact_threshold_of, cut_points, fit_window, newest_input
from loopwire.engines.sim.engine import SimEngine, SimSettings
from loopwire.protocol.compaction import decode_summary
from loopwire.protocol.context import EMPTY_CONTEXT, Context
from loopwire.protocol.errors import ProtocolError
from loopwire.protocol.items import (
    Compaction,
    FunctionCall,
    FunctionCallOutput,
    InputItem,
    Message,
    Reasoning,
    answered_call_id,
    call_id_of,
)
from loopwire.protocol.request import decode_http_create

HEADER = 5


def cost(item: InputItem) -> int:
    """10 tokens per item, a compaction 1 per 100 characters of summary."""
    if isinstance(item, Compaction):
        return 1 + len(decode_summary(item.encrypted_content) or "") // 100
    return 10


def measure(items: Sequence[InputItem]) -> int:
    return HEADER + sum(cost(item) for item in items)


def ctx(items: Sequence[InputItem]) -> Context:
    return EMPTY_CONTEXT.extend(list(items))


def call(n: int) -> FunctionCall:
    return FunctionCall(call_id=f"call_{n}", name="read", arguments="{}", id=f"fc_{n}")


def output(n: int) -> FunctionCallOutput:
    return FunctionCallOutput(call_id=f"call_{n}", output="x" * 50, id=f"fco_{n}")


def agent(turns: int) -> list[InputItem]:
    """user, then per turn: call + output."""
    items: list[InputItem] = [Message(role="user", content="fix the bug", id="msg_u")]
    for n in range(turns):
        items += [call(n), output(n)]
    return items


def fit(items: list[InputItem], rule: WindowRule) -> tuple[InputItem, ...] | None:
    fitted = fit_window(ctx(items), rule, measure(items), measure)
    assert fitted.tokens == measure(fitted.items if fitted.items is not None else items)
    return fitted.items


def assert_pairs_whole(items: Sequence[InputItem]) -> None:
    issued = {call_id_of(item) for item in items} - {None}
    answered = {answered_call_id(item) for item in items} - {None}
    assert answered <= issued, "an output lost its call"
    assert issued <= answered | {call_id_of(items[-1])}, "a call lost its output"


def test_fits_exactly_at_the_window_and_is_left_alone() -> None:
    items = agent(3)  # 7 items: 75 tokens
    assert fit(items, WindowRule(75, truncate=False)) is None
    with pytest.raises(ProtocolError) as refused:
        fit(items, WindowRule(74, truncate=False))
    assert refused.value.status == 400
    assert refused.value.code == "context_length_exceeded"
    assert refused.value.param == "input"


def test_truncation_drops_the_oldest_items_in_whole_pairs_down_to_three_quarters() -> None:
    items = agent(5)  # 11 items, 115 tokens; the new input is the last output
    kept = fit(items, WindowRule(100, truncate=True))
    assert kept is not None
    # 75 tokens hold 7 items, but dropping 4 would part call_1 from its output: 5 go
    assert kept == tuple(items[5:])
    assert measure(kept) <= 75
    assert_pairs_whole(kept)
    # the next turns extend what was kept without truncating again, until the window fills
    assert fit([*kept, call(5), output(5)], WindowRule(100, truncate=True)) is None


def test_truncation_falls_back_to_the_window_when_the_newest_input_is_larger_than_the_target() -> None:
    items = [*agent(3), Message(role="assistant", content="ok", id="msg_a")]
    items += [Message(role="user", content=str(n), id=f"m{n}") for n in range(6)]  # 65 tokens of new input
    kept = fit(items, WindowRule(HEADER + 60, truncate=True))  # target 48: only the window can hold it
    assert kept == tuple(items[-6:])


def test_truncation_never_splits_a_call_from_its_outputs() -> None:
    # parallel calls: call_a, call_b, then their outputs: no cut inside the group
    items: list[InputItem] = [
        Message(role="user", content="go", id="msg_u"),
        FunctionCall(call_id="a", name="t", arguments="{}", id="fc_a"),
        FunctionCall(call_id="b", name="t", arguments="{}", id="fc_b"),
        FunctionCallOutput(call_id="a", output="1", id="fco_a"),
        FunctionCallOutput(call_id="b", output="2", id="fco_b"),
        Message(role="assistant", content="both read", id="msg_a"),
        Message(role="user", content="next", id="msg_n"),
    ]
    assert newest_input(items) == 6
    assert cut_points(items, 6) == [1, 5, 6]
    kept = fit(items, WindowRule(HEADER + 30, truncate=True))  # target 26: two items
    assert kept == tuple(items[5:])


def test_a_reasoning_item_stays_with_what_follows_it() -> None:
    items: list[InputItem] = [
        Message(role="user", content="go", id="msg_u"),
        Reasoning(id="rs_1", summary=[]),
        call(1),
        output(1),
        Message(role="user", content="again", id="msg_2"),
    ]
    assert 2 not in cut_points(items, 4)
    assert cut_points(items, 4) == [1, 4]


def test_instructions_and_system_messages_are_never_dropped() -> None:
    items: list[InputItem] = [
        Message(role="developer", content="be terse", id="msg_dev"),
        *agent(4),
    ]
    kept = fit(items, WindowRule(HEADER + 40, truncate=True))
    assert kept is not None
    assert kept[0] == items[0]
    assert kept[1:] == tuple(items[-2:])


def test_the_newest_input_is_never_dropped_even_with_auto() -> None:
    items = [*agent(4), Message(role="assistant", content="done", id="msg_a")]
    new = [Message(role="user", content="a", id="m1"), Message(role="user", content="b", id="m2")]
    items += new
    # the two new messages alone are 25 tokens: a window of 24 cannot hold them
    with pytest.raises(ProtocolError) as refused:
        fit(items, WindowRule(HEADER + 19, truncate=True))
    assert refused.value.code == "context_length_exceeded"
    kept = fit(items, WindowRule(HEADER + 20, truncate=True))
    assert kept == tuple(new)


def test_a_single_item_too_large_is_refused_even_with_auto() -> None:
    items = [Message(role="user", content="huge", id="msg_huge")]
    with pytest.raises(ProtocolError) as refused:
        fit(items, WindowRule(HEADER + 9, truncate=True))
    assert refused.value.code == "context_length_exceeded"


def test_an_output_answering_an_old_call_keeps_that_call() -> None:
    # the new input answers call_0 (issued long ago): the call must stay, so nothing before it may go
    items: list[InputItem] = [Message(role="user", content="go", id="msg_u"), call(0), call(1), output(1)]
    items += [call(2), output(2), output(0)]
    assert newest_input(items) == 5
    assert cut_points(items, 5) == [1]
    kept = fit(items, WindowRule(measure(items) - 10, truncate=True))
    assert kept == tuple(items[1:])
    with pytest.raises(ProtocolError):
        fit(items, WindowRule(measure(items) - 11, truncate=True))


def test_compaction_past_the_threshold_keeps_the_newest_input_and_summarises_the_rest() -> None:
    items = agent(10)  # 21 items, 215 tokens
    fitted = fit_window(ctx(items), WindowRule(None, compact_threshold=200), measure(items), measure)
    assert fitted.compaction is not None and fitted.items is not None
    # the newest input (the last output) and its call stay; everything before is in the summary
    assert fitted.items == (fitted.compaction, items[19], items[20])
    summary = decode_summary(fitted.compaction.encrypted_content)
    assert summary is not None and "fix the bug" in summary and "call_0" in summary
    assert fitted.tokens <= 100
    assert fitted.dropped == 19
    # below the threshold nothing happens
    assert fit(items, WindowRule(None, compact_threshold=215)) is None


def test_compaction_shortens_its_summary_until_it_fits() -> None:
    items: list[InputItem] = [Message(role="user", content="w" * 20_000, id="msg_big"), *agent(3)]
    rule = WindowRule(300, compact_threshold=40)
    fitted = fit_window(ctx(items), rule, measure(items), measure)
    assert fitted.compaction is not None
    assert fitted.tokens <= 300
    assert fitted.tokens <= 20 or len(decode_summary(fitted.compaction.encrypted_content) or "") < 100


def test_compaction_that_cannot_fit_the_window_is_refused() -> None:
    items: list[InputItem] = [*agent(2), Message(role="user", content="x", id="m_new")]
    with pytest.raises(ProtocolError) as refused:
        fit(items, WindowRule(HEADER + 5, compact_threshold=10))
    assert refused.value.code == "context_length_exceeded"


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ("compaction", "context_management"),
        ([{"compact_threshold": 5}], "context_management[0]"),
        ([{"type": "compaction", "compact_threshold": 0}], "context_management[0].compact_threshold"),
        ([{"type": "compaction", "compact_threshold": "9"}], "context_management[0].compact_threshold"),
    ],
)
def test_a_malformed_context_management_is_a_400_naming_the_field(value: object, param: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        compact_threshold_of(value)
    assert refused.value.param == param


def test_context_management_of_other_types_is_accepted_and_ignored() -> None:
    assert compact_threshold_of([{"type": "something_newer", "x": 1}]) is None
    assert compact_threshold_of([{"type": "compaction"}]) is None
    assert compact_threshold_of([{"type": "compaction", "compact_threshold": 900}]) == 900


def test_max_output_tokens_is_reserved_from_the_window_up_to_half_of_it() -> None:
    body = b'{"model": "m", "input": "hi", "max_output_tokens": 100, "truncation": "auto"}'
    request = decode_http_create(body)
    assert window_rule(request, 1000) == WindowRule(900, truncate=True)
    huge = decode_http_create(b'{"model": "m", "input": "hi", "max_output_tokens": 100000}')
    assert window_rule(huge, 1000) == WindowRule(500, truncate=False)
    assert window_rule(decode_http_create(b'{"model": "m", "input": "hi"}'), None) is None


def test_the_sim_engine_counts_and_the_plan_takes_the_truncated_context() -> None:
    engine = SimEngine(SimSettings(context_window=400))
    context = ctx(agent(30))
    parent = CachedResponse("resp_p", "owner", "lane", context, None, True, 0)
    request = decode_http_create(
        b'{"model": "m", "previous_response_id": "resp_p", "truncation": "auto", '
        b'"input": [{"type": "message", "role": "user", "content": "next"}]}'
    )
    plan = plan_turn(request, parent=parent, lane="lane", owner="owner", response_id="resp_x", now=0)
    full = engine.count_tokens(plan.engine_request)
    assert full > 400
    rule = window_rule(request, engine.context_window)
    assert rule is not None
    tokens = fit_plan(plan, rule, engine.count_tokens)
    assert plan.pruned and tokens <= 400
    assert engine.count_tokens(plan.engine_request) == tokens
    kept = list(plan.context)
    assert kept[-1] == plan.new_items[0]
    assert_pairs_whole(kept[:-1])
    assert len(kept) < context.length + 1
    # stored whole and unlinked, the turn roots its chain: its own id is the conversation's root and key
    assert plan.root == "resp_x"
    assert plan.engine_request.cache_key == "owner/resp_x"


def test_the_cut_search_finds_what_a_scan_of_every_cut_finds() -> None:
    """Varied item sizes (so the size-based first probe is sometimes off), every window from tiny to
    roomy: the search returns the first cut a linear scan returns, or refuses where the scan finds none."""
    import random

    from loopwire.core.window import TRUNCATE_TO

    rng = random.Random(7)

    def sized(item: InputItem) -> int:
        if isinstance(item, FunctionCallOutput) and isinstance(item.output, str):
            return 2 + len(item.output) // 10
        return 3

    def measure_sized(items: Sequence[InputItem]) -> int:
        return HEADER + sum(sized(item) for item in items)

    for case in range(60):
        items: list[InputItem] = [Message(role="user", content="go", id="msg_u")]
        for n in range(rng.randint(1, 40)):
            items.append(call(n))
            items.append(
                FunctionCallOutput(call_id=f"call_{n}", output="y" * rng.randint(0, 400), id=f"o{n}")
            )
        total = measure_sized(items)
        window = rng.randint(HEADER, total + 5)
        start = len(items) - 1
        cuts = cut_points(items, start)

        def scan(items: list[InputItem], cuts: list[int], limit: int) -> tuple[InputItem, ...] | None:
            for k in cuts:
                if measure_sized(items[k:]) <= limit:
                    return tuple(items[k:])
            return None

        expected = (
            None
            if total <= window
            else scan(items, cuts, int(window * TRUNCATE_TO)) or scan(items, cuts, window)
        )
        try:
            fitted = fit_window(ctx(items), WindowRule(window, truncate=True), total, measure_sized)
        except ProtocolError:
            assert total > window and expected is None, case
            continue
        assert fitted.items == expected, case
