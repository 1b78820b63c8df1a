"""A recording reverse proxy on loopback, for tests that need to see what a real client put on the wire.

Owns one aiohttp server in a background thread that forwards every HTTP request and every WebSocket
connection to an upstream loopwire unchanged, and keeps what passed: each HTTP request (method, path,
headers, body), each WebSocket handshake's headers and every text frame in both directions. It must not
change, drop or invent traffic: the client and the server see each other exactly as without it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from conftest import free_port

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-accept",
    "content-encoding",
}


@dataclass
class HttpExchange:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0


@dataclass
class SocketRecord:
    """One WebSocket connection: its handshake headers and its frames as (direction, parsed JSON);
    direction is "client" for what the client sent and "server" for what it received."""

    path: str
    headers: dict[str, str]
    frames: list[tuple[str, Any]] = field(default_factory=list)

    def client_events(self) -> list[dict[str, Any]]:
        return [frame for direction, frame in self.frames if direction == "client"]

    def server_events(self) -> list[dict[str, Any]]:
        return [frame for direction, frame in self.frames if direction == "server"]


class WireRecorder:
    """Start with `start()`, point the client at `base_url`, read `http` and `sockets`, then `stop()`."""

    def __init__(self, upstream_origin: str) -> None:
        self.upstream_origin = upstream_origin.rstrip("/")
        self.port = 0
        self.http: list[HttpExchange] = []
        self.sockets: list[SocketRecord] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="wire-recorder", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> WireRecorder:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> WireRecorder:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def responses_posts(self) -> Iterator[HttpExchange]:
        return (ex for ex in self.http if ex.method == "POST" and ex.path.rstrip("/") == "/v1/responses")

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        for _ in range(3):
            self.port = free_port()
            try:
                await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
                return
            except OSError:
                continue
        raise RuntimeError("the wire recorder could not bind a loopback port")

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        headers = {name.lower(): value for name, value in request.headers.items()}
        if headers.get("upgrade", "").lower() == "websocket":
            return await self._relay_socket(request, headers)
        return await self._relay_http(request, headers)

    async def _relay_http(self, request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        exchange = HttpExchange(request.method, request.path_qs, headers, body)
        self.http.append(exchange)
        forward = {k: v for k, v in headers.items() if k not in _HOP_BY_HOP}
        async with self._session.request(
            request.method, self.upstream_origin + request.path_qs, headers=forward, data=body
        ) as upstream:
            exchange.status = upstream.status
            reply = web.StreamResponse(status=upstream.status)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    reply.headers[name] = value
            if "content-encoding" in upstream.headers:
                reply.headers["Content-Encoding"] = upstream.headers["content-encoding"]
            await reply.prepare(request)
            async for chunk in upstream.content.iter_any():
                await reply.write(chunk)
            await reply.write_eof()
            return reply

    async def _relay_socket(self, request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
        assert self._session is not None
        record = SocketRecord(request.path_qs, headers)
        self.sockets.append(record)
        forward = {k: v for k, v in headers.items() if k not in _HOP_BY_HOP and not k.startswith("sec-")}
        url = "ws" + self.upstream_origin[len("http") :] + request.path_qs
        try:
            upstream = await self._session.ws_connect(url, headers=forward, max_msg_size=0, compress=15)
        except aiohttp.WSServerHandshakeError as refused:
            return web.Response(status=refused.status, text=refused.message)
        client = web.WebSocketResponse(max_msg_size=0, compress=True)
        await client.prepare(request)

        async def pump(source: Any, sink: Any, direction: str) -> None:
            async for message in source:
                if message.type == aiohttp.WSMsgType.TEXT:
                    try:
                        record.frames.append((direction, json.loads(message.data)))
                    except json.JSONDecodeError:
                        record.frames.append((direction, {"unparsed": message.data}))
                    await sink.send_str(message.data)
                elif message.type == aiohttp.WSMsgType.BINARY:
                    record.frames.append((direction, {"binary_bytes": len(message.data)}))
                    await sink.send_bytes(message.data)
                else:
                    break
            await sink.close()

        tasks = [
            asyncio.ensure_future(pump(client, upstream, "client")),
            asyncio.ensure_future(pump(upstream, client, "server")),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.close()
        await client.close()
        return client
