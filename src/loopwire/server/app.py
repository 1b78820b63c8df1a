"""The ASGI application: routes /v1/responses for HTTP and WebSocket, /v1/models, health, with a lifespan.

Owns routing and error rendering only; the create path goes straight to the turn code, no framework.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable

from ..protocol.errors import ProtocolError, server_error, store_unavailable
from ..store.base import StoreUnavailable
from . import http
from .asgi_types import Receive, Scope, Send
from .auth import authorization_header
from .state import ServerState
from .ws import refuse_upgrade, serve_websocket

log = logging.getLogger("loopwire.server")

PREFIX = "/v1/responses"
MODELS_PREFIX = "/v1/models"
LIVE_PATH = "/healthz"
READY_PATH = "/readyz"
HEALTH_PATHS = (LIVE_PATH, READY_PATH)
METRICS_PATH = "/metrics"
StateFactory = Callable[[], Awaitable[ServerState]]


def _not_found(path: str) -> ProtocolError:
    return ProtocolError(404, f"Unknown path: {path}", code="not_found")


def _method_not_allowed(method: str, path: str) -> ProtocolError:
    return ProtocolError(405, f"Method {method} is not allowed on {path}.", code="method_not_allowed")


class LoopwireApp:
    """ASGI 3 callable. The state is built at lifespan startup (or passed in ready-made)."""

    def __init__(self, state_factory: StateFactory) -> None:
        self._state_factory = state_factory
        self.state: ServerState | None = None
        self.draining = False
        """Set on SIGTERM (server/lifecycle.py): /readyz answers 503 so a balancer sends no new work here."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        state = await self._ensure_state()
        if kind == "websocket":
            if scope["path"].rstrip("/") != PREFIX:
                await send({"type": "websocket.close", "code": 1008})
                return
            try:
                owner = state.api_keys.owner_for(authorization_header(scope["headers"]))
            except ProtocolError as error:
                await refuse_upgrade(send, error)
                return
            await serve_websocket(state, scope, receive, send, owner)
            return
        if kind == "http":
            try:
                owner = self._owner(state, scope)
                await self._http(state, scope, receive, send, owner)
            except ProtocolError as error:
                await http.send_error(send, error)
            except StoreUnavailable:
                await http.send_error(send, store_unavailable())
            except ConnectionResetError:
                return

    @staticmethod
    def _owner(state: ServerState, scope: Scope) -> str:
        if scope["path"] in HEALTH_PATHS or scope["path"] == METRICS_PATH:
            return ""
        return state.api_keys.owner_for(authorization_header(scope["headers"]))

    async def _ensure_state(self) -> ServerState:
        if self.state is None:
            self.state = await self._state_factory()
        return self.state

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._ensure_state()
                except ValueError as exc:  # a configuration the engine refused: its message says it all
                    log.error("startup failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.state is not None:
                    await self.state.aclose()
                    self.state = None
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, state: ServerState, scope: Scope, receive: Receive, send: Send, owner: str) -> None:
        method: str = scope["method"]
        path: str = scope["path"].rstrip("/") or "/"
        if path in HEALTH_PATHS:
            if path == READY_PATH and self.draining:
                await http.send_json(send, 503, b'{"status":"draining"}')
            else:
                # The pid lets a supervisor tell this server from another process that won a port race.
                await http.send_json(send, 200, b'{"status":"ok","pid":%d}' % os.getpid())
            return
        if path == METRICS_PATH and method == "GET":
            body = state.render_metrics()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain; version=0.0.4")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        if path == MODELS_PREFIX or path.startswith(MODELS_PREFIX + "/"):
            if method != "GET":
                raise _method_not_allowed(method, path)
            await http.models(state, send, path[len(MODELS_PREFIX) + 1 :] or None)
            return
        if path == PREFIX:
            if method == "POST":
                await self._guarded(http.create(state, receive, send, owner), send)
                return
            raise _method_not_allowed(method, path)
        if not path.startswith(PREFIX + "/"):
            raise _not_found(path)
        rest = path[len(PREFIX) + 1 :].split("/")
        if rest == ["compact"] and method == "POST":
            await http.compact(state, receive, send, owner)
        elif rest == ["input_tokens"] and method == "POST":
            await http.input_tokens(state, receive, send, owner)
        elif len(rest) == 1 and method == "GET":
            await http.retrieve(state, send, rest[0], owner)
        elif len(rest) == 1 and method == "DELETE":
            await http.delete(state, send, rest[0], owner)
        elif len(rest) == 2 and rest[1] == "input_items" and method == "GET":
            await http.input_items(state, send, rest[0], owner, scope.get("query_string", b""))
        elif len(rest) == 2 and rest[1] == "cancel" and method == "POST":
            await http.cancel(state, send, rest[0], owner)
        else:
            raise _not_found(path)

    @staticmethod
    async def _guarded(work: Awaitable[None], send: Send) -> None:
        try:
            await work
        except (ProtocolError, StoreUnavailable, ConnectionResetError):
            raise
        except Exception:
            log.exception("unexpected error on the create path")
            await http.send_error(send, server_error())
