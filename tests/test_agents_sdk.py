"""The official `openai-agents` SDK over WebSocket mode against the live server: one agent with one function
tool runs to completion (the model calls the tool, the SDK runs it and sends its output back, the model
answers), every request on the socket, the continuation chained by `previous_response_id`.

The agent is tests/agents_client.py, run by the SDK's own venv (`.venv-agents`, pinned by the Makefile;
`make test-latest` points LOOPWIRE_AGENTS_PYTHON at one with the newest release).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import API_KEY, ROOT, ServerProcess, metric

CLIENT = Path(__file__).with_name("agents_client.py")


def agents_python() -> Path:
    python = Path(os.environ.get("LOOPWIRE_AGENTS_PYTHON", ROOT / ".venv-agents" / "bin" / "python"))
    if not python.exists():
        pytest.skip(f"the openai-agents SDK's venv ({python}) is not installed: run `make test`")
    return python


def test_agent_with_one_function_tool_runs_to_completion_over_websocket(server: ServerProcess) -> None:
    python = agents_python()
    before_ws = metric(server, "loopwire_turns_total", transport="ws", outcome="completed")
    before_http = metric(server, "loopwire_turns_total", transport="http")
    before_hits = metric(server, "loopwire_parent_lookups_total", result="cache")

    done = subprocess.run(
        [str(python), str(CLIENT), server.base_url, API_KEY],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "OPENAI_AGENTS_DISABLE_TRACING": "1"},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    run = json.loads(done.stdout.strip().splitlines()[-1])

    assert len(run["city_calls"]) == 1 and run["city_calls"][0], (
        "the model's call ran the tool once, with a city"
    )
    assert isinstance(run["final_output"], str) and run["final_output"]
    assert run["items"].count("tool_call_item") == 1 and run["items"].count("tool_call_output_item") == 1
    assert run["responses"] == 2
    assert metric(server, "loopwire_turns_total", transport="ws", outcome="completed") - before_ws == 2
    assert metric(server, "loopwire_turns_total", transport="http") == before_http
    assert metric(server, "loopwire_parent_lookups_total", result="cache") - before_hits == 1
