"""The engine interface: the request an engine receives and the deltas it streams back.

Owns the contract between the session core and any model; holds no wire encoding and no sockets.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from ..protocol.context import Context

ToolKind = Literal["function", "custom"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call: a function (JSON arguments per `parameters`) or a custom tool (freeform
    text input, optionally constrained by the grammar `format`), on its own or inside a `namespace`."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    kind: ToolKind = "function"
    namespace: str | None = None
    format: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class NamedToolChoice:
    """The model must call this tool (`kind` tells a function from a custom tool of the same name)."""

    name: str
    kind: ToolKind = "function"


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
    sent_tools: tuple[bytes, ...] = ()
    """Every tool as the client sent it (JSON), hosted and unknown ones included: an engine in front of
    another Responses server passes these on; the others run only `tools`."""
    reasoning: dict[str, Any] | None = None
    include: tuple[str, ...] = ()
    text_format: dict[str, Any] | None = None
    """`text.format` when it is not plain text (`json_schema` or `json_object`)."""


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    """A new tool call begins; argument deltas (a custom tool's input text) follow until the next start or
    the finish. `namespace` names the namespace the tool was offered in."""

    call_id: str
    name: str
    kind: ToolKind = "function"
    namespace: str | None = None


@dataclass(frozen=True, slots=True)
class ToolArgumentsDelta:
    delta: str


ReasoningPart = Literal["summary", "text"]


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """The model's thinking: `text` (its raw reasoning) or a `summary` of it. Consecutive reasoning deltas
    form one reasoning item; a new `summary_index` starts a new summary part. `encrypted_content`, when an
    engine has it (an upstream's opaque blob), is carried onto the item as is."""

    delta: str
    part: ReasoningPart = "text"
    summary_index: int = 0
    encrypted_content: str | None = None


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


EngineDelta = TextDelta | ToolCallStart | ToolArgumentsDelta | ReasoningDelta | Finished


class EngineError(Exception):
    """The engine could not complete the turn; the session turns it into response.failed."""

    def __init__(self, message: str, *, code: str = "server_error") -> None:
        super().__init__(message)
        self.code = code


class Engine(Protocol):
    name: str

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


def runs_hosted_tools(engine: Engine) -> bool:
    """Whether the engine hands hosted tools (web_search, mcp, ...) to something that runs them (an
    engine sets `runs_hosted_tools = True`); other engines never offer them to the model."""
    return bool(getattr(engine, "runs_hosted_tools", False))


def served_models(engine: Engine) -> tuple[str, ...]:
    """The model names the engine lists on `GET /v1/models` (an engine sets `model_ids`)."""
    return tuple(getattr(engine, "model_ids", ()))


def accepts_any_model(engine: Engine) -> bool:
    """Whether a request naming a model the engine does not list is still served (the sim engine, and a
    gateway that sends the client's model name on), so `GET /v1/models/{id}` finds every id."""
    return bool(getattr(engine, "accepts_any_model", False))
