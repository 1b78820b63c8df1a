"""The synthetic agent conversation the per-turn benchmarks send: five coding tools, ~1.7 KB of
instructions resent every turn (as Codex does), and a tool output of a chosen size answering each call.

Owns the request bodies and the client-side history; must not send anything or time anything.
"""

from __future__ import annotations

import random
from typing import Any

TOOL_SPECS = [
    ("read_file", "Read a file of the repository.", {"path": {"type": "string"}}),
    ("grep", "Search the repository.", {"pattern": {"type": "string"}, "path": {"type": "string"}}),
    ("list_files", "List files under a directory.", {"path": {"type": "string"}}),
    ("write_file", "Write a file.", {"path": {"type": "string"}, "content": {"type": "string"}}),
    ("run_tests", "Run the test suite.", {"selector": {"type": "string"}}),
]
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": {
            "type": "object",
            "properties": props,
            "required": list(props),
            "additionalProperties": False,
        },
    }
    for name, description, props in TOOL_SPECS
]
INSTRUCTIONS = "You are a careful coding agent. Use the tools to find and fix the failing test. " * 20
TASK = "The test test_parse fails. Find and fix it."
WORDS = "def class return import self value result assert error file path line test config".split()


def tool_output(size: int, rng: random.Random) -> str:
    lines: list[str] = []
    total = 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(10))
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)[:size]


def base_body(store: bool, model: str = "sim") -> dict[str, Any]:
    """What every turn's request carries besides its input."""
    return {
        "model": model,
        "instructions": INSTRUCTIONS,
        "tools": TOOLS,
        "tool_choice": "required",
        "store": store,
    }


class Conversation:
    """The client's view: the whole history, and the new items of the next turn."""

    def __init__(self, seed: int, output_bytes: int) -> None:
        self.rng = random.Random(seed)
        self.output_bytes = output_bytes
        first = {"type": "message", "role": "user", "content": TASK}
        self.history: list[dict[str, Any]] = [first]
        self.delta: list[dict[str, Any]] = [first]
        self.previous_id: str | None = None

    def create_event(self, body: dict[str, Any]) -> dict[str, Any]:
        """A WebSocket-mode `response.create` with the delta and previous_response_id."""
        event = {"type": "response.create", **body, "input": self.delta}
        if self.previous_id is not None:
            event["previous_response_id"] = self.previous_id
        return event

    def absorb(self, response: dict[str, Any]) -> None:
        self.previous_id = response["id"]
        output = response["output"]
        self.history.extend(output)
        calls = [item for item in output if item["type"] == "function_call"]
        if not calls:
            raise RuntimeError(f"expected a function call, got {output}")
        self.delta = [
            {
                "type": "function_call_output",
                "call_id": call["call_id"],
                "output": tool_output(self.output_bytes, self.rng),
            }
            for call in calls
        ]
        self.history.extend(self.delta)
