"""The benchmark's records: one per model turn and one per rollout, as flat JSON-ready rows.

Owns the record fields, their meaning and JSON lines in and out; must not measure or aggregate.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar


@dataclass(frozen=True, slots=True)
class TurnSample:
    rollout: str
    """The rollout this turn belongs to (RolloutSample.rollout)."""
    variant: str
    profile: str
    speed: str
    calls: int
    repeat: int
    turn: int
    ttft_ms: float | None
    """Client-side: from the start of the turn to its first output delta."""
    latency_ms: float
    """Client-side: from the start of the turn to its terminal event."""
    bytes_up: int
    bytes_down: int
    sent_delta: bool
    """The request carried only new items plus previous_response_id."""
    input_tokens: int
    cached_tokens: int
    """Prompt tokens the engine's prefix cache (its KV state) already held."""
    rendered_tokens: int | None
    """Prompt tokens the server rendered this turn (new items only when the lane's render was cached)."""
    reused_tokens: int | None
    """Prompt tokens whose render the server kept from the lane's previous turn (not rendered again)."""
    model_ms: float | None
    """The engine's latency model for this turn: time to first token plus decoding (what a real GPU
    server would spend), without loopwire's own work. A real engine: the time it spent on the turn
    (render, prefill, decode)."""
    server_ms: float | None
    """Server-side: from the frame or request arriving to the terminal event being ready."""
    server_cpu_ms: float | None
    """CPU the server process used during the turn (all threads), None where it cannot be read."""
    tool_ms: float
    """Time the agent's tools took after this turn (not part of latency_ms)."""
    engine_ttft_ms: float | None = None
    """Server-side, a real engine's own: from the turn's start in the engine to its first token (render
    and prefill included). A forced call reaches the client only once it closes, so the client's TTFT of
    a call turn includes decoding the call; this one does not."""
    output_tokens: int = 0
    output_digest: str = ""
    """The model's output without server-made ids (measure.output_digest): equal across transports when
    the model said the same."""

    @property
    def prefilled_tokens(self) -> int:
        """Prompt tokens the engine computed this turn (those its KV state did not hold)."""
        return self.input_tokens - self.cached_tokens


@dataclass(frozen=True, slots=True)
class RolloutSample:
    rollout: str
    variant: str
    transport: str
    profile: str
    speed: str
    calls: int
    repeat: int
    order: int
    """Position of this rollout among the cell's variants in its repeat (0 = ran first)."""
    turns: int
    tool_calls: int
    finished: bool
    repo_hash: str
    e2e_s: float
    """The whole rollout: connect, every turn, every tool call."""
    floor_s: float
    """What no transport can avoid: model time + tool time + one round trip per turn."""
    model_s: float
    tool_s: float
    rtt_s: float
    bytes_up: int
    """Request payloads (HTTP bodies, WebSocket messages before compression), every attempt."""
    bytes_down: int
    wire_up: int | None
    """TCP payload that crossed the emulated link up (headers, framing, compression included); None on
    loopback, which has no emulator in between."""
    wire_down: int | None
    rendered_tokens: int | None
    reused_tokens: int | None
    server_cpu_s: float | None
    reconnects: int
    interrupted: int
    history_bytes: int | None = None
    """The conversation's size at the end, as compact JSON (None in records from before it was kept)."""
    file_kb: int = 0
    """The fixture's padding per module (Plan.file_kb)."""
    calls_label: str = ""
    """How the tool calls came about when not from the sim engine's policy (agent/forced.CALLS_LABEL)."""

    @property
    def overhead_s(self) -> float:
        return self.e2e_s - self.floor_s


Record = TypeVar("Record", TurnSample, RolloutSample)


def write_jsonl(path: Path, records: Iterable[TurnSample | RolloutSample]) -> None:
    with path.open("a") as out:
        for record in records:
            row: dict[str, Any] = {"kind": type(record).__name__, **asdict(record)}
            out.write(json.dumps(row, sort_keys=True) + "\n")


def read_jsonl(path: Path, kind: type[Record]) -> Iterator[Record]:
    """The records of one kind from a file write_jsonl made (other kinds and unknown keys are skipped)."""
    names = {item.name for item in fields(kind)}
    with path.open() as source:
        for line in source:
            row = json.loads(line)
            if row.get("kind") == kind.__name__:
                yield kind(**{key: value for key, value in row.items() if key in names})
