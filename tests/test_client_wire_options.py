"""The client's wire options against real servers, counted on the link: permessage-deflate (offered,
accepted or declined) and HTTP keep-alive on and off."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import API_KEY, ServerProcess

from loopwire.client import Session, SessionOptions, TransportName, TurnResult
from loopwire.netem import LinkEmulator

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    }
]
TOOL_OUTPUT = "def wrap(text, width):\n    return text.split()  # and so on\n" * 60


@pytest.fixture(scope="module")
def deflate_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("deflate-server")
    proc = ServerProcess("memory", directory / "server.log", ("--ws-deflate", "on")).start()
    try:
        yield proc
    finally:
        proc.stop()


async def _three_turns(
    server: ServerProcess, link: LinkEmulator, transport: TransportName, options: SessionOptions
) -> list[TurnResult]:
    base = f"http://127.0.0.1:{link.port}/v1"
    conversation: list[dict[str, Any]] = [{"type": "message", "role": "user", "content": "Read wrap.py"}]
    results = []
    async with Session(base, transport, api_key=API_KEY, options=options) as session:
        for _ in range(3):
            result = await session.run_turn(conversation, model="sim", tools=TOOLS, tool_choice="required")
            assert result.status == "completed"
            results.append(result)
            conversation += result.output
            call = result.function_calls[0]
            conversation.append(
                {"type": "function_call_output", "call_id": call["call_id"], "output": TOOL_OUTPUT}
            )
    return results


async def test_deflate_shrinks_the_bytes_on_the_link_and_changes_nothing_else(
    deflate_server: ServerProcess,
) -> None:
    wire: dict[bool, tuple[int, int]] = {}
    payload: dict[bool, int] = {}
    for deflate in (False, True):
        async with LinkEmulator(deflate_server.port, "loopback") as link:
            results = await _three_turns(deflate_server, link, "ws", SessionOptions(ws_deflate=deflate))
            totals = link.totals()
        wire[deflate] = (totals.bytes_up, totals.bytes_down)
        payload[deflate] = sum(result.metrics.bytes_up for result in results)
        assert [result.metrics.sent_delta for result in results] == [False, True, True]
        assert all(result.metrics.transport == "ws" for result in results)
    assert payload[True] == pytest.approx(payload[False], rel=0.05)  # the same messages, before compression
    assert wire[True][0] < wire[False][0] * 0.5 and wire[True][1] < wire[False][1] * 0.5


async def test_deflate_offered_to_a_server_without_it_still_works(server: ServerProcess) -> None:
    async with LinkEmulator(server.port, "loopback") as link:
        results = await _three_turns(server, link, "ws", SessionOptions(ws_deflate=True))
        totals = link.totals()
    assert [result.metrics.sent_delta for result in results] == [False, True, True]
    carried = sum(result.metrics.bytes_up + result.metrics.bytes_down for result in results)
    assert totals.bytes_up + totals.bytes_down > carried  # uncompressed: payload plus framing and handshake


@pytest.mark.parametrize("keepalive", [True, False], ids=["keep-alive", "close"])
async def test_http_keepalive_reuses_one_connection_and_close_opens_one_per_turn(
    server: ServerProcess, keepalive: bool
) -> None:
    async with LinkEmulator(server.port, "loopback") as link:
        results = await _three_turns(server, link, "http-full", SessionOptions(http_keepalive=keepalive))
        accepted = link.totals().connections_accepted
    assert all(result.metrics.transport == "http-full" for result in results)
    assert accepted == (1 if keepalive else 3)
