"""The sticky table that gives each lane one of an upstream's numbered slots (the local engine's token-id
mode sends it as llama-server's `id_slot`): a lane keeps its slot, a new lane takes the least recently used
one, and interleaved lanes never share a slot while there are enough."""

from __future__ import annotations

import pytest

from loopwire.engines.common.affinity import SlotTable


def test_interleaved_lanes_keep_distinct_slots() -> None:
    table = SlotTable(2)
    a, b = table.slot("owner:a"), table.slot("owner:b")
    assert {a, b} == {0, 1}
    for _ in range(5):
        assert (table.slot("owner:a"), table.slot("owner:b")) == (a, b)


def test_every_pair_of_keys_gets_two_slots() -> None:
    """What a hash modulo the slot count would not give: two lanes on two slots, for any keys."""
    for n in range(200):
        table = SlotTable(2)
        assert table.slot(f"a{n}") != table.slot(f"b{n}")


def test_a_new_lane_takes_the_least_recently_used_slot_and_its_old_lane_moves_on() -> None:
    table = SlotTable(2)
    a, b = table.slot("a"), table.slot("b")
    table.slot("a")  # b's slot is now the least recently used
    assert table.slot("c") == b
    assert table.slot("a") == a  # a kept its slot
    # b was forgotten when c took its slot: it takes the least recently used one (c's), as a new lane
    assert table.slot("b") == b
    assert table.slot("a") == a


def test_a_table_needs_a_slot() -> None:
    with pytest.raises(ValueError):
        SlotTable(0)
