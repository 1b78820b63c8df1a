"""The process's stop sequence behind a load balancer: on SIGTERM, first report not ready for `drain_s`
(GET /readyz answers 503, everything else is still served) so the balancer's health check takes the node out
of rotation, then uvicorn's graceful shutdown (listener closed, sockets retired with 1012 after their
running turns, the store flushed).

Owns only the timing of that sequence; what draining means for a socket stays in server/ws.py.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from types import FrameType

import uvicorn


class DrainingServer(uvicorn.Server):
    """uvicorn's Server with a not-ready period before the shutdown. A second signal, or SIGINT, during
    that period shuts down at once."""

    def __init__(self, config: uvicorn.Config, *, drain_s: float, on_drain: Callable[[], None]) -> None:
        super().__init__(config)
        self.drain_s = drain_s
        self._on_drain = on_drain
        self._drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_s <= 0 or self._drain_until is not None or sig == signal.SIGINT:
            super().handle_exit(sig, frame)
            return
        self._captured_signals.append(sig)
        self._drain_until = time.monotonic() + self.drain_s
        self._on_drain()  # a plain flag: safe in a signal handler on the loop's thread

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None and time.monotonic() >= self._drain_until:
            self.should_exit = True
        return await super().on_tick(counter)
