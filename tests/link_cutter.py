"""A loopback TCP proxy for client tests: counts connections, cuts them on demand, can refuse upgrades.

Owns only byte forwarding and the faults the tests inject; knows nothing of HTTP beyond writing a 426.
"""

from __future__ import annotations

import asyncio
import contextlib


class _Link:
    """One accepted client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.cut_on_request = False
        self.swallow_reply = False
        self.closed = False

    def cut(self) -> None:
        if not self.closed:
            self.closed = True
            self.client.transport.abort()
            self.upstream.transport.abort()


class LinkCutter:
    """Forwards 127.0.0.1:port to 127.0.0.1:target_port.

    - `refuse_upgrades`: answer every new connection with HTTP 426 and close it.
    - `cut()`: abort every live connection now (both sides see a reset).
    - `cut_on_next_request()`: on live connections, the next bytes from the client are dropped and the
      link is cut: the server never sees the request.
    - `swallow_next_reply()`: on live connections, the next request reaches the server, but its first
      reply bytes are dropped and the link is cut: the server ran the request, the client saw nothing.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.refuse_upgrades = False
        self.connections = 0
        self.refused = 0
        self.links: list[_Link] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> LinkCutter:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/responses"

    def live(self) -> list[_Link]:
        return [link for link in self.links if not link.closed]

    def cut(self) -> None:
        for link in self.live():
            link.cut()

    def cut_on_next_request(self) -> None:
        for link in self.live():
            link.cut_on_request = True

    def swallow_next_reply(self) -> None:
        for link in self.live():
            link.swallow_reply = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse_upgrades:
            self.refused += 1
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                await reader.readuntil(b"\r\n\r\n")
                body = (
                    b'{"error":{"message":"WebSocket mode is not available here","code":"upgrade_required"}}'
                )
                writer.write(
                    b"HTTP/1.1 426 Upgrade Required\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%b" % (len(body), body)
                )
                await writer.drain()
            writer.close()
            return
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        link = _Link(writer, up_writer)
        self.links.append(link)
        for task in (
            asyncio.create_task(self._pump(link, reader, up_writer, upstream=True)),
            asyncio.create_task(self._pump(link, up_reader, writer, upstream=False)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        try:
            while not link.closed:
                data = await reader.read(65536)
                if not data:
                    break
                if upstream and link.cut_on_request:
                    link.cut()
                    return
                if not upstream and link.swallow_reply:
                    link.cut()
                    return
                writer.write(data)
        except (ConnectionError, OSError):
            pass
        finally:
            link.cut()
