"""What the session and router need of an open WebSocket, whichever library holds it.

Owns the ClientSocket protocol only; the implementations are ws.py (picows) and ws_deflate.py (aiohttp).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from .inbox import FrameInbox
from .result import TurnMetrics


class ClientSocket(Protocol):
    opened_at: float
    resumed_from: ClientSocket | None
    """The dropped socket whose lanes the server gave this one (reconnect grace), if any."""

    @property
    def inbox(self) -> FrameInbox: ...

    @property
    def usable(self) -> bool:
        """Open, and not announced as retiring by the server."""
        ...

    def age(self, now: float) -> float: ...

    def mark_retiring(self) -> None: ...

    def exchange(self, body: bytes, metrics: TurnMetrics) -> AsyncGenerator[bytes, None]:
        """Send one `response.create` frame and yield the message payloads that follow until the caller
        stops reading; raises ConnectionLost when the socket fails."""
        ...

    def abort(self) -> None:
        """Drop the connection now (the server cancels whatever it was running for it)."""
        ...

    async def close(self, timeout_s: float = 1.0) -> None: ...
