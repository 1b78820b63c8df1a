"""Observability: /metrics in the Prometheus text format counts turns, parent lookups, bytes and open
connections; the opt-in `loopwire.timing` vendor event carries the server's time breakdown."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from conftest import API_KEY, ServerProcess, make_client


@pytest.fixture(scope="module")
def timed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("observe")
    server = ServerProcess("memory", tmp / "server.log", ("--timing-events", "on")).start()
    yield server
    server.stop()


def metrics(server: ServerProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"{server.origin}/metrics", timeout=10) as reply:
        assert reply.headers["content-type"].startswith("text/plain")
        text = reply.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    return values


async def test_timing_event_precedes_the_terminal_event_and_metrics_count_the_turns(
    timed: ServerProcess,
) -> None:
    before = metrics(timed)
    url = timed.base_url.replace("http://", "ws://") + "/responses"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {API_KEY}"}) as socket:
        previous = None
        for text in ("one", "two"):
            body = {"type": "response.create", "model": "sim", "input": text, "store": False}
            if previous:
                body["previous_response_id"] = previous
            await socket.send(json.dumps(body))
            events = []
            while not events or events[-1]["type"] != "response.completed":
                events.append(json.loads(await socket.recv()))
            previous = events[-1]["response"]["id"]
            timing = events[-2]
            assert timing["type"] == "loopwire.timing" and timing["response_id"] == previous
            assert {"decode_ms", "resolve_plan_ms", "ttft_ms", "total_ms"} <= set(timing["timings"])
            assert all(value >= 0 for value in timing["timings"].values())
            assert [event["sequence_number"] for event in events] == list(range(len(events)))
        during = metrics(timed)
        assert during["loopwire_open_connections"] >= 1
        assert during["loopwire_open_lanes"] >= 1
    make_client(timed.base_url).responses.create(model="sim", input="over http")
    after = metrics(timed)

    def grew(name: str, by: float) -> None:
        assert after.get(name, 0.0) - before.get(name, 0.0) >= by, (name, before.get(name), after.get(name))

    grew('loopwire_turns_total{transport="ws",outcome="completed"}', 2)
    grew('loopwire_turns_total{transport="http",outcome="completed"}', 1)
    grew('loopwire_parent_lookups_total{result="cache"}', 1)
    grew('loopwire_bytes_received_total{transport="ws"}', 100)
    grew('loopwire_bytes_sent_total{transport="ws"}', 1000)
    grew('loopwire_turn_seconds_count{transport="ws"}', 2)
    assert any(re.match(r'loopwire_turn_seconds_bucket\{transport="ws",le="\+Inf"\}', name) for name in after)
    assert after["loopwire_open_connections"] == 0


def test_json_log_lines_carry_the_response_id() -> None:
    import logging

    from loopwire.server.logs import JsonFormatter

    record = logging.LogRecord(
        "loopwire.turn", logging.WARNING, __file__, 1, "the engine went %s", ("silent",), None
    )
    record.response_id = "resp_123"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "the engine went silent" and entry["level"] == "warning"
    assert entry["response_id"] == "resp_123" and entry["logger"] == "loopwire.turn"
    assert entry["ts"].endswith("Z")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record = logging.LogRecord("loopwire.turn", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "RuntimeError: boom" in json.loads(JsonFormatter().format(record))["exception"]
