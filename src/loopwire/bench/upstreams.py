"""The zero-latency upstreams `loopwire bench gateway` puts loopwire in front of, each in its own process:
a chat-completions server (a raw asyncio HTTP/1.1 server: it reads every request body whole, then answers
with a short streamed completion holding one tool call) and a stateless Responses API (aiohttp: WebSocket
mode and HTTP + SSE on one port; it accepts any previous_response_id and answers every create at once
with one short function call, the same seven events a real server sends).

Owns those two servers; must not import loopwire's server or engines (they are what is measured).

    python -m loopwire.bench.upstreams chat|responses PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import uvloop

MODEL = "bench-model"


def completion_body(number: int) -> bytes:
    """A short streamed chat completion: role, one whole tool call, finish, usage, [DONE]."""
    chunk_id = f"chatcmpl-{number}"
    head = {"id": chunk_id, "object": "chat.completion.chunk", "created": 1747300000, "model": MODEL}
    call = {
        "index": 0,
        "id": f"call_{number}",
        "type": "function",
        "function": {"name": "read_file", "arguments": '{"path": "src/parser.py"}'},
    }
    chunks: list[dict[str, Any]] = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {**head, "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]},
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {
            **head,
            "choices": [],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 12, "total_tokens": 1012},
        },
    ]
    events = b"".join(b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks)
    return events + b"data: [DONE]\n\n"


class UpstreamProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive with Content-Length bodies only (what aiohttp sends for a bytes body)."""

    counter = 0

    def __init__(self) -> None:
        self.transport: Any = None
        self.buffer = bytearray()
        self.need: int | None = None  # body bytes still expected after the headers, once parsed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's TCPTransport is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.need is None:  # reading headers
                self.buffer += view
                view = view[len(view) :]
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                length = -1
                for line in bytes(self.buffer[:end]).split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length < 0:
                    self.transport.write(b"HTTP/1.1 411 Length Required\r\ncontent-length: 0\r\n\r\n")
                    self.transport.close()
                    return
                view = memoryview(bytes(self.buffer[end + 4 :]))  # body bytes that came with the headers
                self.buffer.clear()
                self.need = length
            taken = min(self.need, len(view))  # body bytes are counted, not kept
            self.need -= taken
            view = view[taken:]
            if self.need:
                return
            self.need = None  # the whole body was read: answer at once
            UpstreamProtocol.counter += 1
            body = completion_body(UpstreamProtocol.counter)
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )


def serve_chat_upstream(port: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(UpstreamProtocol, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


def _dump(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


def turn_events(number: int) -> list[str]:
    """One function call turn as a Responses server streams it."""
    response_id = f"resp_up{number}"
    head = {"id": response_id, "object": "response", "created_at": 1747300000, "model": MODEL}
    call = {
        "id": f"fc_up{number}",
        "type": "function_call",
        "status": "in_progress",
        "call_id": f"call_up{number}",
        "name": "read_file",
        "arguments": "",
    }
    arguments = '{"path": "src/parser.py"}'
    done = {**call, "status": "completed", "arguments": arguments}
    usage = {
        "input_tokens": 1000,
        "input_tokens_details": {"cached_tokens": 900},
        "output_tokens": 12,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 1012,
    }
    running = {**head, "status": "in_progress", "output": [], "error": None}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": running},
        {"type": "response.in_progress", "response": running},
        {"type": "response.output_item.added", "output_index": 0, "item": call},
        {
            "type": "response.function_call_arguments.delta",
            "item_id": call["id"],
            "output_index": 0,
            "delta": arguments,
        },
        {
            "type": "response.function_call_arguments.done",
            "item_id": call["id"],
            "output_index": 0,
            "arguments": arguments,
        },
        {"type": "response.output_item.done", "output_index": 0, "item": done},
        {
            "type": "response.completed",
            "response": {**head, "status": "completed", "output": [done], "error": None, "usage": usage},
        },
    ]
    return [_dump({**event, "sequence_number": index}) for index, event in enumerate(events)]


def serve_responses_upstream(port: int) -> None:
    from aiohttp import WSMsgType, web

    counter = 0

    async def create(request: web.Request) -> web.StreamResponse:
        nonlocal counter
        await request.read()
        counter += 1
        body = "".join(f"event: {json.loads(e)['type']}\ndata: {e}\n\n" for e in turn_events(counter))
        return web.Response(body=body.encode(), content_type="text/event-stream")

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        nonlocal counter
        ws = web.WebSocketResponse(max_msg_size=0, compress=False)
        await ws.prepare(request)
        async for message in ws:
            if message.type != WSMsgType.TEXT or '"response.create"' not in message.data[:40]:
                continue
            counter += 1
            for event in turn_events(counter):
                await ws.send_str(event)
        return ws

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post("/v1/responses", create)
    app.router.add_get("/v1/responses", websocket)
    app.router.add_get("/healthz", healthz)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, handle_signals=True)


def main(argv: list[str]) -> None:
    kind, port = argv[0], int(argv[1])
    if kind == "chat":
        serve_chat_upstream(port)
    elif kind == "responses":
        serve_responses_upstream(port)
    else:
        raise SystemExit(f"usage: python -m loopwire.bench.upstreams chat|responses PORT (got {kind!r})")


if __name__ == "__main__":
    main(sys.argv[1:])
