"""The options of the responses engine: the upstream URL, auth, transport, store policy, timeouts, bounds.

Owns option names, defaults, their validation and the upstream URLs derived from them; must not open
connections or build request bodies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from ..common.options import refuse_unknown, upstream_endpoint

Transport = Literal["auto", "ws", "http"]
StorePolicy = Literal["always", "never", "client"]
TRANSPORTS: tuple[Transport, ...] = ("auto", "ws", "http")
STORE_POLICIES: tuple[StorePolicy, ...] = ("always", "never", "client")
RESPONSES_PATH = "/responses"


@dataclass(frozen=True, slots=True)
class ResponsesSettings:
    """Everything the engine needs to reach an upstream that speaks the Responses API.

    upstream: the base URL (`https://api.openai.com/v1`) or the `.../responses` endpoint itself.
    model: the upstream model name; None sends the client's `model` unchanged.
    transport: `ws` keeps one upstream WebSocket per lane chain and continues on it with only the new items;
    a refused upgrade (any answer but 101) falls back to HTTP for that turn. `auto` is `ws`, except that
    after a refused upgrade it stays on HTTP for `upgrade_retry_s`. `http` is HTTP + SSE only.
    store: what goes upstream as `store`: `always` (true: continuations over HTTP and across upstream
    sockets can use `previous_response_id`), `never` (false: zero retention upstream; HTTP then resends
    the whole history every turn, a WebSocket still continues on the same socket), or `client` (the
    client's flag).
    connect_timeout_s: establishing a TCP connection (and the WebSocket handshake). first_byte_timeout_s:
    from sending the request to the first upstream event. idle_timeout_s: the longest gap between events.
    max_sockets: upstream WebSockets open at once; past it, the least recently used idle one is closed
    (its chain replays the full history next turn), and when every one is busy the turn goes over HTTP.
    idle_sockets: sockets whose chain ended (the client connection closed) kept open for new chains;
    socket_idle_s: how long such a socket stays open unused.
    """

    upstream: str
    api_key: str | None = None
    model: str | None = None
    transport: Transport = "auto"
    store: StorePolicy = "always"
    connect_timeout_s: float = 5.0
    first_byte_timeout_s: float = 120.0
    idle_timeout_s: float = 60.0
    max_connections: int = 256
    keepalive_s: float = 60.0
    max_sockets: int = 256
    idle_sockets: int = 8
    socket_idle_s: float = 60.0
    upgrade_retry_s: float = 600.0
    max_message_bytes: int = 64 * 1024 * 1024
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    context_window: int = 0
    """The upstream model's context window in tokens (input and output), so the server can truncate,
    compact or refuse a turn that would overflow it; 0: unknown (every turn is sent as it is)."""

    def __post_init__(self) -> None:
        responses_endpoint(self.upstream)
        if self.context_window < 0:
            raise ValueError("context_window must not be negative (0: unknown)")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport takes {', '.join(TRANSPORTS)}; got {self.transport!r}")
        if self.store not in STORE_POLICIES:
            raise ValueError(f"store takes {', '.join(STORE_POLICIES)}; got {self.store!r}")
        timeouts = (self.connect_timeout_s, self.first_byte_timeout_s, self.idle_timeout_s)
        if min(timeouts) <= 0:
            raise ValueError("upstream timeouts must be positive")
        if self.keepalive_s < 0 or self.socket_idle_s < 0 or self.upgrade_retry_s < 0:
            raise ValueError("keepalive_s, socket_idle_s and upgrade_retry_s must not be negative")
        if self.max_connections < 1 or self.max_sockets < 1:
            raise ValueError("max_connections and max_sockets must be at least 1")
        if not 0 <= self.idle_sockets <= self.max_sockets:
            raise ValueError("idle_sockets must be between 0 and max_sockets")
        if self.max_message_bytes < 1024:
            raise ValueError("max_message_bytes must be at least 1024")

    @property
    def http_endpoint(self) -> str:
        return responses_endpoint(self.upstream)

    @property
    def ws_endpoint(self) -> str:
        parts = urlsplit(self.http_endpoint)
        return urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc, parts.path, "", ""))

    @classmethod
    def from_options(cls, **options: Any) -> ResponsesSettings:
        """Build from loose options, as a command line gives them. Unknown names are a ValueError."""
        refuse_unknown("responses", cls, options)
        if not options.get("upstream"):
            raise ValueError("the responses engine needs an upstream URL (--upstream URL)")
        return cls(**options)


def responses_endpoint(url: str) -> str:
    """The `/responses` URL of an upstream given as a base URL or as the endpoint itself."""
    endpoint = upstream_endpoint(url, RESPONSES_PATH)
    if "," in url:
        raise ValueError("the responses engine takes one upstream URL")
    return endpoint
