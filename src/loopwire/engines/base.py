"""The engine interface: the request an engine receives and the deltas it streams back.

Owns the contract between the session core and any model; holds no wire encoding and no sockets.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from ..protocol.context import Context


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function tool the model may call."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


@dataclass(frozen=True, slots=True)
class NamedToolChoice:
    name: str


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class RenderState:
    """What an engine remembers of a rendered conversation so the next turn renders only its delta.

    Engines subclass this with their own fields; the session core stores it per lane and never looks inside
    beyond `token_count`.
    """

    __slots__ = ("token_count",)

    def __init__(self, token_count: int) -> None:
        self.token_count = token_count


@dataclass(slots=True)
class EngineRequest:
    """One turn. `history` is the full input context; `prefix` (when not None) is this engine's own
    RenderState for `history[:prefix_items]` plus nothing else, kept from the previous turn of the lane.
    `store` is the client's `store` flag (an engine in front of another server may pass it on)."""

    model: str
    history: Context
    instructions: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    generate: bool = True
    prefix: RenderState | None = None
    prefix_items: int = 0
    cache_key: str = ""
    store: bool = True
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    """A new function call begins; argument deltas follow until the next start or the finish."""

    call_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolArgumentsDelta:
    delta: str


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0


StopReason = Literal["stop", "length", "tool_calls"]


@dataclass(slots=True)
class Finished:
    """The last delta of every successful turn. `render` covers history plus this turn's output, so the
    next turn of the lane can pass it back as its prefix; None when the engine keeps no such state."""

    usage: Usage
    stop_reason: StopReason = "stop"
    render: RenderState | None = None
    timings: dict[str, float] = field(default_factory=dict)


EngineDelta = TextDelta | ToolCallStart | ToolArgumentsDelta | Finished


class EngineError(Exception):
    """The engine could not complete the turn; the session turns it into response.failed."""

    def __init__(self, message: str, *, code: str = "server_error") -> None:
        super().__init__(message)
        self.code = code


class Engine(Protocol):
    def stream(self, request: EngineRequest) -> AsyncGenerator[list[EngineDelta], None]:
        """Stream one turn as batches of deltas that are ready together (so a transport can write them in
        one go). The last batch ends with exactly one Finished; or the stream raises EngineError."""
        ...

    def count_tokens(self, request: EngineRequest) -> int:
        """The input tokens a turn with this request would report, without running it."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class UpstreamTokenCounter(Protocol):
    """An engine that can ask its upstream for the exact count (`/input_tokens` awaits it when offered;
    `Engine.count_tokens`, synchronous, is the estimate used otherwise)."""

    async def count_input_tokens(self, request: EngineRequest) -> int: ...
