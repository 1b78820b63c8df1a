"""What one turn produced: the final Response and the numbers the benchmark records about it.

Owns the result and metrics records and their accessors; measures nothing itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class TurnMetrics:
    transport: str = ""
    """What served the turn: "ws", "http-chained" or "http-full" (after a fallback, an HTTP one)."""
    sent_delta: bool = False
    """The request that produced the response sent only new items plus previous_response_id."""
    input_items_sent: int = 0
    """Items in that request's `input`."""
    ttft_s: float | None = None
    """From the start of the turn to its first output delta (None if the turn streamed none)."""
    latency_s: float = 0.0
    """From the start of the turn to its terminal event, reconnects and replays included."""
    bytes_up: int = 0
    """Request payload bytes of every attempt (HTTP bodies, WebSocket frame payloads; no headers)."""
    bytes_down: int = 0
    """Event payload bytes received (the SSE body as sent, or WebSocket frame payloads)."""
    attempts: int = 0
    """Requests sent for this turn: 1, plus a replay or resends."""
    replayed: bool = False
    """The server answered previous_response_not_found and the full input was sent once more."""
    resends: int = 0
    """Requests sent again because the link dropped before any output of them arrived."""
    reconnects: int = 0
    """Sockets opened during the turn to replace one that was lost."""
    resumed: bool = False
    """A socket opened during the turn got the lost one's lanes back (reconnect grace)."""
    rotated: bool = False
    """The socket was replaced before the turn because it neared the server's age limit."""
    fell_back: bool = False
    """This turn moved the session from the socket to HTTP (426, or repeated socket failures)."""
    server_timings: dict[str, float] = field(default_factory=dict)
    """The server's `loopwire.timing` breakdown of the attempt that produced the response (empty unless
    the server runs with `--timing-events on`): its ttft_ms, total_ms, and the engine's own figures."""


@dataclass(frozen=True, slots=True)
class TurnResult:
    response: dict[str, Any]
    """The final Response object from the terminal event."""
    metrics: TurnMetrics

    @property
    def id(self) -> str:
        return str(self.response["id"])

    @property
    def status(self) -> str:
        return str(self.response.get("status", ""))

    @property
    def output(self) -> list[dict[str, Any]]:
        output = self.response.get("output")
        return output if isinstance(output, list) else []

    @property
    def output_text(self) -> str:
        return "".join(
            part.get("text", "")
            for item in self.output
            if item.get("type") == "message"
            for part in item.get("content") or []
            if isinstance(part, dict) and part.get("type") == "output_text"
        )

    @property
    def function_calls(self) -> list[dict[str, Any]]:
        return [item for item in self.output if item.get("type") == "function_call"]

    @property
    def ttft_s(self) -> float | None:
        return self.metrics.ttft_s

    @property
    def latency_s(self) -> float:
        return self.metrics.latency_s

    @property
    def bytes_up(self) -> int:
        return self.metrics.bytes_up

    @property
    def bytes_down(self) -> int:
        return self.metrics.bytes_down
