"""Session settings: transports, rotation, retry and fallback knobs, timeouts, with their defaults.

Owns names, defaults and validation of the settings; the code that applies each one lives where it acts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .backoff import Backoff

TransportName = Literal["http-full", "http-chained", "ws"]
TRANSPORTS: tuple[TransportName, ...] = ("http-full", "http-chained", "ws")
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SessionOptions:
    rotate_after_s: float = 55 * 60.0
    """Open a fresh socket, between turns, once the current one is this old: before the server's age
    limit (60 minutes on loopwire and OpenAI) retires it."""
    max_socket_failures: int = 3
    """Consecutive socket failures (failed connects, drops during a turn) before falling back to HTTP."""
    fallback_cooldown_s: float = 60.0
    """How long turns stay on HTTP after a fallback before the socket is tried again."""
    backoff: Backoff = field(default_factory=Backoff)
    """Pacing of reconnects after failures."""
    http_retries: int = 2
    """Resends over HTTP after the connection failed before any output of the turn arrived."""
    connect_timeout_s: float = 10.0
    """TCP connect plus WebSocket handshake."""
    read_timeout_s: float | None = None
    """Longest wait for the next event of a running turn; None waits as long as the server takes."""
    max_frame_bytes: int = 64 * MIB
    """Largest WebSocket frame accepted from the server."""
    http_pool_size: int = 8
    """Keep-alive connections kept by the HTTP transport."""
    ws_deflate: bool = False
    """Offer permessage-deflate on the socket (aiohttp's client instead of picows, which has none): fewer
    bytes on slow links, more CPU per turn on fast ones. The server must run with `--ws-deflate on`."""
    http_keepalive: bool = True
    """Reuse HTTP connections between turns. Off, every turn pays a TCP connect (and, through a link
    emulator, its handshake round trip): the unfair baseline some clients still are."""

    per_turn_fields: frozenset[str] = frozenset()
    """Request fields that may change between turns without resending the whole conversation, e.g.
    tool_choice and max_output_tokens of an agent that forces each call: previous_response_id carries a
    response's input and output, none of these fields. By default any changed field resends it all
    (Codex CLI's rule)."""

    resume: bool = False
    """Ask the server for a reconnect-grace token (`--resume-grace-s` on loopwire) and present it when a
    dropped socket is replaced: the new socket continues the lost one's lanes by id, store=false too,
    instead of sending the whole history again. A server without grace ignores the header."""

    def __post_init__(self) -> None:
        if self.rotate_after_s <= 0:
            raise ValueError("rotate_after_s must be positive")
        if self.max_socket_failures < 1:
            raise ValueError("max_socket_failures must be at least 1")
        if self.fallback_cooldown_s < 0 or self.http_retries < 0:
            raise ValueError("fallback_cooldown_s and http_retries must not be negative")
        if self.connect_timeout_s <= 0 or (self.read_timeout_s is not None and self.read_timeout_s <= 0):
            raise ValueError("timeouts must be positive")
