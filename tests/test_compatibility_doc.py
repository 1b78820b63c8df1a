"""docs/compatibility.md against the installed `openai` SDK: every tool type, item type, streaming event type,
WebSocket client event type and create-request field the SDK defines has a row, and the totals the page states
are the counts of its cells. An SDK upgrade that adds a type fails here, naming it, until the table says what
loopwire does with it.
"""

from __future__ import annotations

import re
import typing
from collections import Counter
from typing import Any

import pytest
from conftest import ROOT
from openai.types.responses import (
    response_create_params,
    response_input_item,
    response_item,
    response_output_item,
    response_stream_event,
    responses_client_event,
    responses_server_event,
    tool,
)

DOC = ROOT / "docs" / "compatibility.md"
ENGINES = ("sim", "openai-chat", "responses", "local")
VERDICTS = ("run", "echoed", "refused")


def _members(union: Any) -> list[Any]:
    """The classes of a (possibly Annotated, possibly nested) SDK union."""
    origin = typing.get_origin(union)
    if origin is typing.Annotated:
        return _members(typing.get_args(union)[0])
    if origin is typing.Union:
        return [member for arg in typing.get_args(union) for member in _members(arg)]
    return [union]


def _literals(annotation: Any) -> list[str]:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(value) for value in typing.get_args(annotation)]
    return [value for arg in typing.get_args(annotation) for value in _literals(arg)]


def sdk_types(*unions: Any) -> set[str]:
    names: set[str] = set()
    for union in unions:
        for cls in _members(union):
            names.update(_literals(cls.model_fields["type"].annotation))
    return names


def sdk_request_fields() -> set[str]:
    fields = set(response_create_params.ResponseCreateParamsBase.__annotations__)
    return fields | set(response_create_params.ResponseCreateParamsStreaming.__annotations__)


SECTIONS = {
    "Tool types": lambda: sdk_types(tool.Tool),
    "Item types": lambda: sdk_types(
        response_input_item.ResponseInputItem,
        response_output_item.ResponseOutputItem,
        response_item.ResponseItem,
    ),
    "Streaming events": lambda: sdk_types(
        response_stream_event.ResponseStreamEvent, responses_server_event.ResponsesServerEvent
    ),
    "WebSocket client events": lambda: sdk_types(responses_client_event.ResponsesClientEvent),
    "Request fields": sdk_request_fields,
}


def table_rows(section: str) -> list[list[str]]:
    """The body rows of the first table under `## {section}`, as lists of cell texts."""
    text = DOC.read_text()
    found = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert found, f"docs/compatibility.md has no '## {section}' section"
    lines = [line for line in found.group(1).splitlines() if line.startswith("|")]
    assert len(lines) > 2, f"the '{section}' section has no table"
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def listed(section: str) -> set[str]:
    return {name for row in table_rows(section) for name in re.findall(r"`([^`]+)`", row[0])}


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_sdk_type_has_a_row(section: str) -> None:
    missing = sorted(SECTIONS[section]() - listed(section))
    assert not missing, f"docs/compatibility.md, '{section}': no row for {missing} (new in the SDK?)"


def verdicts(section: str) -> Counter[str]:
    """run / echoed / refused over the per-engine cells of a section (the first word of each cell)."""
    rows = table_rows(section)
    counts: Counter[str] = Counter()
    for row in rows:
        assert len(row) >= 1 + len(ENGINES), f"'{section}' row {row[0]} lacks a cell per engine"
        for cell in row[1 : 1 + len(ENGINES)]:
            word = cell.split()[0].strip("*") if cell else ""
            assert word in VERDICTS, f"'{section}' row {row[0]}: {cell!r} is not one of {VERDICTS}"
            counts[word] += 1
    return counts


def test_stated_totals_are_the_counts_of_the_cells() -> None:
    counts: Counter[str] = Counter()
    for section in ("Tool types", "Item types", "Request fields"):
        counts += verdicts(section)
    stated = re.search(r"Totals: (\d+) run, (\d+) echoed, (\d+) refused", DOC.read_text())
    assert stated, "docs/compatibility.md states no 'Totals: N run, N echoed, N refused' line"
    assert tuple(int(n) for n in stated.groups()) == (counts["run"], counts["echoed"], counts["refused"])
