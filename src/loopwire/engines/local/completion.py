"""llama.cpp's `llama-server` native `/completion` endpoint, for the local engine's token-id upstream mode:
a prompt of token ids in, streamed pieces of the output out.

Owns the request body (the ids, the slot, `cache_prompt`, the sampling fields, the output cap, a JSON
schema), reading the server-sent events into typed chunks under the first-byte and idle timeouts, the
server's slot count and per-slot context (`GET /props`), and turning an error answer into an EngineError
(a prompt past the slot's context is `context_length_exceeded`). Closing the stream early closes the
connection, which stops the server's generation. Must not render, tokenize or parse the output.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from ...protocol.sse import SseDecoder, SseError
from ..base import EngineError
from ..common.options import upstream_endpoint
from ..common.upstream_errors import answer_detail, context_overflow, error_text, upstream_error
from ..common.upstream_http import KeepalivePool, ReadClock, drain, read_error_body, upstream_headers
from .settings import COMPLETION_PATH, LocalSettings

log = logging.getLogger("loopwire.engine.local")

PROPS_PATH = "/props"
FINAL_FIELDS = ("content", "tokens", "stop", "stop_type", "tokens_predicted", "timings", "truncated")
"""What the last event of a stream carries back (not the prompt text, nor the generation settings)."""


class Timings(msgspec.Struct, frozen=True, gc=False):
    cache_n: int | None = None
    """Prompt tokens the slot's KV already held (reused)."""
    prompt_n: int | None = None
    prompt_ms: float | None = None
    predicted_n: int | None = None


class CompletionChunk(msgspec.Struct, frozen=True, gc=False):
    """One event of the stream: the next piece of text and its ids, or (`stop`) the end and its counts."""

    content: str = ""
    tokens: list[int] = []
    stop: bool = False
    stop_type: str = ""
    """eos (an end-of-generation token, or a finished grammar), limit (n_predict), word (a stop string)."""
    tokens_predicted: int | None = None
    timings: Timings | None = None
    truncated: bool = False
    error: Any = None


_decode_chunk = msgspec.json.Decoder(CompletionChunk).decode


@dataclass(frozen=True, slots=True)
class ServerProps:
    slots: int
    slot_context: int | None
    """Tokens one slot holds (the server's `-c` divided among its `-np` slots)."""


def completion_body(
    prompt: Sequence[int],
    *,
    slot: int,
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    schema: dict[str, Any] | None,
) -> dict[str, Any]:
    """The `/completion` request. Sampling as the Responses API means it: temperature 0 is greedy, else
    temperature and top_p alone (llama.cpp's top_k and min_p defaults switched off)."""
    body: dict[str, Any] = {
        "prompt": list(prompt),
        "stream": True,
        "cache_prompt": True,
        "id_slot": slot,
        "n_predict": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": 0,
        "min_p": 0.0,
        "seed": seed,
        "response_fields": list(FINAL_FIELDS),
    }
    if schema is not None:
        body["json_schema"] = schema
    return body


class CompletionUpstream:
    """One llama-server, over the shared keep-alive pool."""

    def __init__(self, settings: LocalSettings) -> None:
        self.settings = settings
        self.endpoint = upstream_endpoint(settings.upstream, COMPLETION_PATH)
        self.label = self.endpoint.removesuffix(COMPLETION_PATH)
        self._http = KeepalivePool(
            "local",
            limit=64,
            keepalive_s=60.0,
            connect_timeout_s=settings.connect_timeout_s,
            headers=upstream_headers(None, {}, {"Accept": "text/event-stream"}),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def props(self) -> ServerProps:
        """The server's slot count and per-slot context; an EngineError when it cannot say."""
        settings = self.settings
        try:
            async with asyncio.timeout(settings.connect_timeout_s + settings.first_byte_timeout_s):
                async with self._http.client().get(self.label + PROPS_PATH) as response:
                    data = await response.read()
                    status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise EngineError(
                f"the llama-server at {self.label} could not be reached ({error!r})", code="upstream_error"
            ) from None
        if status != 200:
            raise EngineError(
                f"the llama-server at {self.label} answered GET {PROPS_PATH} with HTTP {status}: "
                f"{error_text(data)} (is it llama.cpp's llama-server?)",
                code="upstream_error",
            )
        try:
            props = msgspec.json.decode(data)
            slots = int(props["total_slots"])
            context = props.get("default_generation_settings", {}).get("n_ctx")
        except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError):
            raise EngineError(
                f"{self.label}{PROPS_PATH} does not say how many slots it has (is it llama.cpp's "
                "llama-server?)",
                code="upstream_error",
            ) from None
        return ServerProps(max(slots, 1), context if isinstance(context, int) and context > 0 else None)

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[CompletionChunk, None]:
        """The chunks of one completion, ending with the one that has `stop` set."""
        settings = self.settings
        clock = ReadClock(settings.first_byte_timeout_s, settings.idle_timeout_s)
        response = await self._open(msgspec.json.encode(body), clock)
        finished = False
        try:
            decoder = SseDecoder()
            while True:
                data = await self._read(response, clock)
                try:
                    events = decoder.feed(data) if data else decoder.close()
                except SseError as error:
                    raise EngineError(
                        f"the llama-server stream is not readable: {error}", code="upstream_error"
                    ) from None
                for event in events:
                    if event.event == "error":  # llama.cpp's `error: {...}` line
                        raise upstream_error(event.data)
                    chunk = self._decode(event.data)
                    yield chunk
                    if chunk.stop:
                        finished = True
                        return
                if not data:
                    raise EngineError(
                        f"the llama-server at {self.label} closed the stream before the generation ended",
                        code="upstream_error",
                    )
        finally:
            if finished:
                await drain(response)
                response.release()
            else:
                response.close()  # a cancelled turn: closing the connection stops the generation

    async def _open(self, data: bytes, clock: ReadClock) -> aiohttp.ClientResponse:
        try:
            async with asyncio.timeout_at(clock.deadline()):
                response = await self._http.client().post(
                    self.endpoint, data=data, headers={"Content-Type": "application/json"}
                )
        except aiohttp.ConnectionTimeoutError:
            raise EngineError(
                f"the llama-server at {self.label} did not accept a connection within "
                f"{self.settings.connect_timeout_s:g} s",
                code="upstream_timeout",
            ) from None
        except TimeoutError:
            raise EngineError(
                f"the llama-server at {self.label} did not answer within "
                f"{self.settings.first_byte_timeout_s:g} s",
                code="upstream_timeout",
            ) from None
        except (aiohttp.ClientError, OSError) as error:
            raise EngineError(
                f"the llama-server at {self.label} could not be reached ({error!r})", code="upstream_error"
            ) from None
        if response.status == 200:
            return response
        body = await read_error_body(response, clock.deadline())
        detail = answer_detail(body, response.reason)
        overflow = context_overflow(body, detail) if 400 <= response.status < 500 else None
        if overflow is not None:
            raise overflow
        raise EngineError(
            f"the llama-server at {self.label} answered HTTP {response.status}: {detail}",
            code="upstream_error",
        )

    async def _read(self, response: aiohttp.ClientResponse, clock: ReadClock) -> bytes:
        try:
            async with asyncio.timeout_at(clock.deadline()):
                data = await response.content.readany()
        except TimeoutError:
            what = "send the first bytes" if not clock.got_data else f"send anything for {clock.idle_s:g} s"
            raise EngineError(
                f"the llama-server at {self.label} did not {what}", code="upstream_timeout"
            ) from None
        except (aiohttp.ClientError, OSError) as error:
            log.warning("the llama-server at %s cut the stream: %r", self.label, error)
            raise EngineError(
                f"the llama-server at {self.label} closed the connection mid-stream", code="upstream_error"
            ) from None
        if data:
            clock.got_data = True
        return data

    def _decode(self, payload: bytes) -> CompletionChunk:
        try:
            chunk = _decode_chunk(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise EngineError(
                f"the llama-server sent an event that is not a completion chunk: {error}",
                code="upstream_error",
            ) from None
        if chunk.error is not None:
            raise upstream_error(msgspec.json.encode({"error": chunk.error}))
        return chunk
