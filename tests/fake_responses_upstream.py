"""A protocol-faithful fake Responses upstream for fault cases only: a real aiohttp server on loopback that
streams Responses SSE events as the API defines them, and fails on demand (a real loopwire server is the
upstream for everything else).

What it answers is chosen by the request's `model`:
- `ok`: a streamed text turn, "Hello world", with usage;
- `http500`: HTTP 500 with an OpenAI-shaped error body;
- `drop`: created, in_progress, the message item and one text delta, then the connection is cut;
- `stall`: created and in_progress, then nothing (until the client leaves);
- `failed`: created, then `response.failed` with an error.
A WebSocket upgrade on `/v1/responses` is refused with 426 (`upgrades` counts the attempts). Every POST
body is recorded in `bodies`.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from aiohttp import web


def _response(response_id: str, status: str, model: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": 1747300000,
        "status": status,
        "model": model,
        "output": [],
        "error": None,
        **extra,
    }


class FakeResponsesUpstream:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.upgrades = 0
        self.counter = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeResponsesUpstream:
        app = web.Application()
        app.router.add_post("/v1/responses", self._create)
        app.router.add_get("/v1/responses", self._upgrade)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _upgrade(self, request: web.Request) -> web.Response:
        self.upgrades += 1
        body = {"error": {"message": "WebSocket mode is not available", "type": "invalid_request_error"}}
        return web.json_response(body, status=426)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        model = body.get("model", "")
        if model == "http500":
            error = {"message": "upstream exploded", "type": "server_error", "code": "server_error"}
            return web.json_response({"error": error}, status=500)
        self.counter += 1
        response_id = f"resp_fake{self.counter}"
        reply = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await reply.prepare(request)
        sequence = 0

        async def send(event: dict[str, Any]) -> None:
            nonlocal sequence
            event["sequence_number"] = sequence
            sequence += 1
            await reply.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())

        created = _response(response_id, "in_progress", model)
        await send({"type": "response.created", "response": created})
        if model == "failed":
            error = {"code": "server_error", "message": "the model crashed"}
            failed = _response(response_id, "failed", model, error=error)
            await send({"type": "response.failed", "response": failed})
            return reply
        await send({"type": "response.in_progress", "response": created})
        if model == "stall":
            await asyncio.Event().wait()  # until the client leaves and the handler is cancelled
        item = {
            "id": "msg_fake",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        await send({"type": "response.output_item.added", "output_index": 0, "item": item})
        part = {"type": "output_text", "text": "", "annotations": []}
        await send(
            {
                "type": "response.content_part.added",
                "item_id": "msg_fake",
                "output_index": 0,
                "content_index": 0,
                "part": part,
            }
        )
        for piece in ("Hello", " world"):
            await send(
                {
                    "type": "response.output_text.delta",
                    "item_id": "msg_fake",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": piece,
                    "logprobs": [],
                }
            )
            if model == "drop":
                assert request.transport is not None
                request.transport.abort()
                return reply
        text = {"type": "output_text", "text": "Hello world", "annotations": []}
        done_item = {**item, "status": "completed", "content": [text]}
        await send({"type": "response.output_item.done", "output_index": 0, "item": done_item})
        usage = {
            "input_tokens": 21,
            "input_tokens_details": {"cached_tokens": 5},
            "output_tokens": 2,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 23,
        }
        completed = _response(response_id, "completed", model, output=[done_item], usage=usage)
        await send({"type": "response.completed", "response": completed})
        return reply
