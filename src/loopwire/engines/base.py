"""The engine interface: the request an engine receives and the deltas it streams back.

Owns the contract between the core and any model; holds no wire encoding and no sockets.
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

    The contract between the core and the engines:

    - **Made by the engine, owned by the core.** An engine returns it in `Finished.render`; the core keeps
      it in the lane's cached response (`core.cache.CachedResponse.render`) and passes it back as
      `EngineRequest.prefix` to the lane's next turn (or a fork's). It never looks inside beyond
      `token_count`, never copies it and never calls into it.
    - **Dropped when the cached response leaves the cache**, all through `ConnectionState._drop`: the
      lane's next response replaces it, a failed continuation evicts its parent, the memory budget evicts
      an idle lane (`CacheBudget`), the connection closes, or the store write after a commit fails. A
      response resolved from the store has no render state. The core drops its reference and nothing
      else: there is no release call.
    - **An engine may hang resources on it** (the responses engine's upstream socket lease, the local
      engine's KV slot, the sim engine's hashes) and release them with `weakref.finalize(state, ...)`
      on the state or on an object only its states hold: release happens when the *last* reference goes,
      which may be later than the drop (a running turn's request still holds its prefix) and, through the
      cycle collector, on another thread or inside unrelated code. So a finalizer must be cheap,
      thread-safe and must not await: schedule the work (`loop.call_soon_threadsafe`) or take a lock.
      A subclass that is finalized needs `__weakref__` in its `__slots__`.
    - The engine must not rely on a drop happening at all: a state may live as long as its connection, so
      anything scarce it pins must also be bounded by the engine (an idle set, an LRU budget).
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
    another Responses server passes these on, with `sent_tool_choice`; the others run only `tools`."""
    sent_tool_choice: str | dict[str, Any] | None = None
    client_metadata: dict[str, Any] | None = None
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
    item_id: str | None = None
    """The id an upstream gave the item (kept, so the item can be sent back to it); a new id starts a new
    reasoning item."""


@dataclass(frozen=True, slots=True)
class UpstreamItem:
    """An output item an upstream produced and ran itself (a web search, an MCP call, ...): its JSON,
    passed to the client as it is, in the output and in the lane's history. `done` False announces it
    (`response.output_item.added`); its progress events (UpstreamEvent) and its finished JSON follow."""

    item_json: bytes
    done: bool = True


@dataclass(frozen=True, slots=True)
class UpstreamEvent:
    """An upstream's event about an item it runs itself (`response.web_search_call.searching`, ...): the
    whole event's JSON, renumbered by the core and passed on."""

    event_json: bytes


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


EngineDelta = (
    TextDelta | ToolCallStart | ToolArgumentsDelta | ReasoningDelta | UpstreamItem | UpstreamEvent | Finished
)


class EngineError(Exception):
    """The engine could not complete the turn; the core turns it into response.failed."""

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

    # An engine may also set `context_window: int | None`, the tokens its model takes in (input and output
    # together; None or absent: unknown, unbounded). The core then fits each turn's input into it
    # (core/window.py), counting with `count_tokens`.


def context_window_of(engine: Engine) -> int | None:
    """The model's context window in tokens, when the engine knows it (a getattr, like runs_hosted_tools)."""
    window = getattr(engine, "context_window", None)
    return window if isinstance(window, int) and window > 0 else None


@runtime_checkable
class UpstreamTokenCounter(Protocol):
    """An engine that can ask its upstream for the exact count (`/input_tokens` awaits it when offered;
    `Engine.count_tokens`, synchronous, is the estimate used otherwise)."""

    async def count_input_tokens(self, request: EngineRequest) -> int: ...


def runs_hosted_tools(engine: Engine) -> bool:
    """Whether the engine hands hosted tools (web_search, mcp, ...) to something that runs them (an
    engine sets `runs_hosted_tools = True`); other engines never offer them to the model."""
    return bool(getattr(engine, "runs_hosted_tools", False))


@dataclass(frozen=True, slots=True)
class EngineCount:
    """One counter an engine keeps itself, shown at /metrics as `name{labels} value`."""

    name: str
    help: str
    labels: tuple[tuple[str, str], ...]
    value: float


@runtime_checkable
class CountingEngine(Protocol):
    """An engine with counters of its own (read from the event loop; a worker thread may be adding)."""

    def counters(self) -> list[EngineCount]: ...


@runtime_checkable
class ModelCatalog(Protocol):
    """An engine whose models are known only by asking (a gateway lists its upstream's)."""

    async def list_models(self) -> list[str]: ...


async def served_models(engine: Engine) -> tuple[str, ...]:
    """The model names the engine lists on `GET /v1/models`: its `list_models()`, else its `model_ids`."""
    if isinstance(engine, ModelCatalog):
        return tuple(await engine.list_models())
    return tuple(getattr(engine, "model_ids", ()))


def accepts_any_model(engine: Engine) -> bool:
    """Whether a request naming a model the engine does not list is still served (the sim engine, and a
    gateway that sends the client's model name on), so `GET /v1/models/{id}` finds every id."""
    return bool(getattr(engine, "accepts_any_model", False))
