"""A short agent-style conversation against a running loopwire server, over HTTP and over WebSocket mode,
with the official `openai` SDK, printing per-turn latency and request payload bytes for each.

HTTP resends the whole conversation every turn (stateless, store=false); WebSocket mode sends only the new
tool output plus `previous_response_id`, and the server continues from its connection-local cache.

    python examples/agent_demo.py --base-url http://127.0.0.1:8000/v1 --turns 12
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

import openai

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file of the repository.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    },
    {
        "type": "function",
        "name": "run_tests",
        "description": "Run the test suite.",
        "parameters": {
            "type": "object",
            "properties": {"selector": {"type": "string"}},
            "required": ["selector"],
        },
    },
]
INSTRUCTIONS = "You are a coding agent. Read files and run tests until the failing test passes."
WORDS = "def class return import self value result assert error file path line test".split()


def fake_file(rng: random.Random, size: int) -> str:
    return "\n".join(" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(size // 50))


def tool_outputs(output: list[Any], rng: random.Random, size: int) -> list[dict[str, Any]]:
    return [
        {"type": "function_call_output", "call_id": item.call_id, "output": fake_file(rng, size)}
        for item in output
        if item.type == "function_call"
    ]


def as_input(item: Any) -> dict[str, Any]:
    return item.model_dump(exclude_none=True)  # type: ignore[no-any-return]


def run_http(client: openai.OpenAI, turns: int, size: int) -> list[tuple[float, int]]:
    rng = random.Random(7)
    history: list[dict[str, Any]] = [{"role": "user", "content": "test_parse fails; please fix it."}]
    rows = []
    for _ in range(turns):
        body = {
            "model": "sim",
            "instructions": INSTRUCTIONS,
            "tools": TOOLS,
            "tool_choice": "required",
            "store": False,
            "input": history,
        }
        start = time.perf_counter()
        response = client.responses.create(**body)  # type: ignore[call-overload]
        rows.append((time.perf_counter() - start, len(json.dumps(body))))
        history += [as_input(item) for item in response.output]
        history += tool_outputs(response.output, rng, size)
    return rows


def run_ws(client: openai.OpenAI, turns: int, size: int) -> list[tuple[float, int]]:
    rng = random.Random(7)
    new_input: list[dict[str, Any]] = [{"role": "user", "content": "test_parse fails; please fix it."}]
    previous: str | None = None
    rows = []
    with client.responses.connect() as connection:
        for _ in range(turns):
            body: dict[str, Any] = {
                "model": "sim",
                "instructions": INSTRUCTIONS,
                "tools": TOOLS,
                "tool_choice": "required",
                "store": False,
                "input": new_input,
            }
            if previous is not None:
                body["previous_response_id"] = previous
            start = time.perf_counter()
            connection.response.create(**body)
            for event in connection:
                if event.type == "error":
                    raise RuntimeError(f"server error: {event}")
                if event.type == "response.completed":
                    response = event.response
                    break
            rows.append((time.perf_counter() - start, len(json.dumps({"type": "response.create", **body}))))
            previous = response.id
            new_input = tool_outputs(response.output, rng, size)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--tool-output-bytes", type=int, default=4000)
    args = parser.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key="loopwire-demo")
    run_ws(client, 2, args.tool_output_bytes)  # warm both paths so the table shows steady state
    run_http(client, 2, args.tool_output_bytes)
    http_rows = run_http(client, args.turns, args.tool_output_bytes)
    ws_rows = run_ws(client, args.turns, args.tool_output_bytes)
    print(
        f"\nAgent loop: {args.turns} tool-calling turns, {args.tool_output_bytes} B of tool output per turn, "
        "openai SDK, sim engine at zero latency\n"
    )
    print("| turn | HTTP ms | HTTP bytes sent | WebSocket ms | WebSocket bytes sent |")
    print("|---:|---:|---:|---:|---:|")
    for turn, ((h_time, h_bytes), (w_time, w_bytes)) in enumerate(zip(http_rows, ws_rows, strict=True), 1):
        print(f"| {turn} | {h_time * 1000:.2f} | {h_bytes:,} | {w_time * 1000:.2f} | {w_bytes:,} |")
    h_total = sum(b for _, b in http_rows)
    w_total = sum(b for _, b in ws_rows)
    h_med = statistics.median(t for t, _ in http_rows)
    w_med = statistics.median(t for t, _ in ws_rows)
    print(
        f"\nmedian turn: HTTP {h_med * 1000:.2f} ms, WebSocket {w_med * 1000:.2f} ms "
        f"({h_med / w_med:.1f}x); bytes sent: HTTP {h_total:,}, WebSocket {w_total:,} "
        f"({h_total / w_total:.1f}x less over WebSocket)"
    )
    print(
        "Times are end to end through the openai SDK, whose own request building and event parsing\n"
        "cost a few ms per turn here; `make bench` measures the server itself with a lean client."
    )


if __name__ == "__main__":
    main()
