"""A protocol-faithful fake chat-completions upstream: a real aiohttp server on loopback that replays the
recorded bodies of vLLM, llama.cpp and Ollama (tests/fixtures/chat_chunks) and fails on demand.

What it answers is chosen by the request's `model` (or, first, by `script`, one entry per request):
- `NAME`: the fixture `NAME.txt`, written in one go;
- `NAME@paced`: one event per write, 20 ms apart;
- `NAME@lateeof`: the whole body at once, but the end of the chunked body 20 ms later;
- `NAME@dropN`: the first N events, then the connection is cut;
- `NAME@stallN`: the first N events, then nothing (until the client leaves or the server closes);
- `NAME@stallhead`: nothing at all, not even the status line;
- `httpNNN`: that status with an OpenAI-shaped error body;
- `overflow_SERVER`: the HTTP 400 that SERVER answers when the prompt does not fit its context
  (`OVERFLOW_BODIES`, worded as each server's source words it);
- `completion_json`: one non-streamed `chat.completion` document;
- `empty`: HTTP 200, an event stream with no events (llama-cpp-python's answer when a streamed generation
  fails after its headers went out).
`GET /v1/models` lists the fixtures, as the models it serves.
Every request is recorded (`received`) with its headers and the client port, and the handlers that were
cancelled because the client went away are counted (`cancelled`).
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

FIXTURES = Path(__file__).parent / "fixtures" / "chat_chunks"
PACE_S = 0.02

COMPLETION_JSON: dict[str, Any] = {
    "id": "chatcmpl-json",
    "object": "chat.completion",
    "created": 1747300000,
    "model": "json-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Not streamed, but fine."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17},
}


_VLLM_PROMPT = (
    "This model's maximum context length is 4096 tokens. However, your request has 5000 input tokens. "
    "Please reduce the length of the input messages. None"
)
OVERFLOW_BODIES: dict[str, dict[str, Any]] = {
    # vLLM's serving code (the prompt alone is past max_model_len); the trailing "None" is how it appends
    # an empty detail
    "vllm": {"error": {"message": _VLLM_PROMPT, "type": "BadRequestError", "param": None, "code": 400}},
    # older vLLM: the prompt and the completion together, the error object not wrapped
    "vllm_legacy": {
        "object": "error",
        "message": "This model's maximum context length is 4096 tokens. However, you requested "
        "5128 tokens (5000 in the messages, 128 in the completion). Please reduce the length of the "
        "messages or completion.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    },
    # vLLM refusing an output cap that does not fit after a prompt that does: not an overflow of the prompt
    "vllm_cap": {
        "error": {
            "message": "'max_tokens' or 'max_completion_tokens' is too large: 8000. This model's maximum "
            "context length is 4096 tokens and your request has 2778 input tokens (8000 > 4096 - 2778). None",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    },
    # llama.cpp's llama-server (server's exceed_context_size_error)
    "llamaserver": {
        "error": {
            "code": 400,
            "message": "request (4476 tokens) exceeds the available context size (4096 tokens), "
            "try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 4476,
            "n_ctx": 4096,
        }
    },
    # older llama-server: no sizes
    "llamaserver_legacy": {
        "error": {
            "code": 400,
            "message": "the request exceeds the available context size, try increasing it",
            "type": "invalid_request_error",
        }
    },
    # llama-cpp-python's server rewording its Llama's "Requested tokens (2300) exceed context window of 2048"
    "llamacpppython": {
        "error": {
            "message": "This model's maximum context length is 2048 tokens. However, you requested "
            "2300 tokens (2300 in the messages, None in the completion). Please reduce the length of the "
            "messages or completion.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    },
    "openai": {
        "error": {
            "message": "This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in 130532 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    },
}


@dataclass(frozen=True)
class Received:
    body: dict[str, Any]
    headers: dict[str, str]
    client_port: int
    raw: bytes = b""
    """The body's bytes as they came (an upstream's prompt cache sees these, not the parsed JSON)."""


def fixture_events(name: str) -> list[bytes]:
    """The fixture's events, each with its blank line."""
    data = (FIXTURES / f"{name}.txt").read_bytes()
    return [event + b"\n\n" for event in data.split(b"\n\n") if event.strip()]


class FakeUpstream:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[str] = []
        self.cancelled = 0
        self.port = 0
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> FakeUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _models(self, request: web.Request) -> web.Response:
        """The fixtures it replays, as the models it serves (vLLM's and Ollama's `/v1/models` shape)."""
        names = sorted(path.stem for path in FIXTURES.glob("*.txt"))
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "fake"} for name in names]
        return web.json_response({"object": "list", "data": data})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.received.append(Received(body, dict(request.headers), peer[1] if peer else 0, raw))
        behaviour = self.script.pop(0) if self.script else str(body.get("model", ""))
        try:
            return await self._answer(request, behaviour)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def _answer(self, request: web.Request, behaviour: str) -> web.StreamResponse:
        name, _, mode = behaviour.partition("@")
        if name.startswith("http"):
            status = int(name[4:])
            error = {
                "message": f"fake upstream answered {status}",
                "type": "fake_error",
                "param": None,
                "code": status,
            }
            return web.json_response({"error": error}, status=status)
        if name.startswith("overflow_"):
            return web.json_response(OVERFLOW_BODIES[name.removeprefix("overflow_")], status=400)
        if name == "empty":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write_eof()
            return response
        if name == "completion_json":
            return web.json_response(COMPLETION_JSON)
        if mode == "stallhead":
            await self._release.wait()
        events = fixture_events(name)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        if mode in ("", "lateeof"):
            await response.write(b"".join(events))
            if mode == "lateeof":
                await asyncio.sleep(PACE_S)
        elif mode == "paced":
            for event in events:
                await response.write(event)
                await asyncio.sleep(PACE_S)
        elif mode.startswith("drop"):
            await response.write(b"".join(events[: int(mode[4:])]))
            assert request.transport is not None
            request.transport.abort()
            return response
        elif mode.startswith("stall"):
            await response.write(b"".join(events[: int(mode[5:])]))
            await self._release.wait()
        await response.write_eof()
        return response

    def bodies(self) -> list[dict[str, Any]]:
        return [received.body for received in self.received]


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
