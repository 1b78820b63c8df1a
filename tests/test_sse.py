"""The one SSE decoder (`loopwire.protocol.sse`) of the gateway engines and the client: framing and its bound.

The bound is tested at its edge and one past it, with a small bound over every split of the bytes and with
the real default; the client's side is tested against a real HTTP server on loopback that never ends its
event: the client stops with StreamError instead of buffering without end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from loopwire.client import Session, StreamError
from loopwire.client.events import event_type
from loopwire.protocol import sse
from loopwire.protocol.sse import MAX_EVENT_BYTES, SseDecoder, SseError, SseEvent

EVENTS = [
    b'{"type":"response.created","sequence_number":0,"response":{"id":"resp_1"}}',
    b'{"type":"response.output_text.delta","sequence_number":1,"delta":"a\\nb"}',
    b'{"type":"response.completed","sequence_number":2,"response":{"id":"resp_1"}}',
]
BODY = b"".join(b"event: " + event_type(e).encode() + b"\ndata: " + e + b"\n\n" for e in EVENTS)


def feed_in_pieces(decoder: SseDecoder, body: bytes, size: int) -> list[SseEvent]:
    return [
        event for start in range(0, len(body), size) for event in decoder.feed(body[start : start + size])
    ]


def data_in_pieces(decoder: SseDecoder, body: bytes, size: int) -> list[bytes]:
    return [
        data for start in range(0, len(body), size) for data in decoder.feed_data(body[start : start + size])
    ]


def test_each_event_whatever_the_chunking() -> None:
    expected = [SseEvent(event_type(e), e) for e in EVENTS]
    for size in (1, 2, 3, 7, 64, len(BODY)):
        decoder = SseDecoder()
        assert feed_in_pieces(decoder, BODY, size) == expected, size
        assert decoder.pending == b""
        assert data_in_pieces(SseDecoder(), BODY, size) == EVENTS, size


def test_crlf_split_across_chunks_comments_multiline_data_and_done() -> None:
    body = b': keep-alive\r\n\r\nevent: x\r\ndata: {"a":\r\ndata: 1}\r\n\r\ndata: [DONE]\r\n\r\n'
    for size in (1, 2, 5, len(body)):
        got = feed_in_pieces(SseDecoder(), body, size)
        assert got == [SseEvent("x", b'{"a":\n1}'), SseEvent("message", b"[DONE]")], size
        assert data_in_pieces(SseDecoder(), body, size) == [b'{"a":\n1}', b"[DONE]"], size


def test_fields_without_colon_lone_cr_extra_blank_lines_and_error_lines() -> None:
    body = b'\n\ndata\rdata:x\r\r\n\n\nevent:\ndata: y\n\nerror: {"code": 1}\n\nid: 3\nretry: 5\n\n'
    assert SseDecoder().feed(body) == [
        SseEvent("message", b"\nx"),
        SseEvent("message", b"y"),
        SseEvent("error", b'{"code": 1}'),
    ]
    assert SseDecoder().feed_data(body) == [b"\nx", b"y", b'{"code": 1}']


def test_an_unfinished_event_waits_and_counts_at_close() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"event: x\ndata: {}\n") == []
    assert decoder.pending == b"event: x\ndata: {}\n"
    assert decoder.feed(b"\n") == [SseEvent("x", b"{}")]
    assert decoder.feed(b"data: tail\r") == []
    assert decoder.close() == [SseEvent("message", b"tail")]
    assert decoder.close() == []


def test_the_bound_at_its_edge_and_one_past_it_over_every_split() -> None:
    limit = 40
    edge = b"data: " + b"x" * (limit - 8) + b"\n\n"  # exactly `limit` bytes with its blank line
    over = b"data: " + b"x" * (limit - 7) + b"\n\n"
    assert len(edge) == limit and len(over) == limit + 1
    for split in range(len(over) + 1):
        decoder = SseDecoder(max_event_bytes=limit)
        events = decoder.feed(edge[:split]) + decoder.feed(edge[split:])
        assert events == [SseEvent("message", b"x" * (limit - 8))], split
        decoder = SseDecoder(max_event_bytes=limit)
        assert decoder.feed_data(edge[:split]) + decoder.feed_data(edge[split:]) == [b"x" * (limit - 8)]
        decoder = SseDecoder(max_event_bytes=limit)
        with pytest.raises(SseError, match=f"longer than {limit} bytes"):
            decoder.feed(over[:split])
            decoder.feed(over[split:])
        decoder = SseDecoder(max_event_bytes=limit)
        with pytest.raises(SseError, match=f"longer than {limit} bytes"):
            decoder.feed_data(over[:split])
            decoder.feed_data(over[split:])
    # events before and after an edge-sized one are unaffected
    assert len(SseDecoder(max_event_bytes=limit).feed(b"data: a\n\n" + edge + b"data: b\n\n")) == 3


def test_an_event_that_never_ends_is_refused_once_past_the_bound() -> None:
    limit = 40
    decoder = SseDecoder(max_event_bytes=limit)
    assert decoder.feed(b"data: " + b"x" * (limit - 6)) == []  # `limit` bytes pending: still allowed
    with pytest.raises(SseError):
        decoder.feed(b"x")


def test_the_default_bound_at_its_edge_and_one_past_it() -> None:
    payload = b"x" * (MAX_EVENT_BYTES - 8)
    assert SseDecoder().feed(b"data: " + payload + b"\n\n") == [SseEvent("message", payload)]
    decoder = SseDecoder()
    assert decoder.feed(b"data: " + payload + b"xx") == []  # the bound's worth pending: still allowed
    with pytest.raises(SseError):
        decoder.feed(b"x")


@pytest.fixture
async def endless_event_server() -> AsyncIterator[tuple[str, list[int]]]:
    """A real HTTP server on loopback whose /v1/responses stream opens one event and never ends it."""
    sent = [0]

    async def responses(request: web.Request) -> web.StreamResponse:
        reply = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await reply.prepare(request)
        await reply.write(b"event: response.created\ndata: ")
        chunk = b"x" * 65536
        try:
            for _ in range(4 * MAX_EVENT_BYTES // len(chunk)):  # at most 4x the bound, then give up
                await reply.write(chunk)
                sent[0] += len(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return reply

    app = web.Application()
    app.router.add_post("/v1/responses", responses)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1", sent
    finally:
        await runner.cleanup()


async def test_the_client_stops_at_the_bound_of_an_endless_event(
    endless_event_server: tuple[str, list[int]],
) -> None:
    base_url, sent = endless_event_server
    async with Session(base_url, "http-full", api_key="sk-test") as session:
        with pytest.raises(StreamError, match=f"longer than {MAX_EVENT_BYTES} bytes"):
            await session.run_turn([{"type": "message", "role": "user", "content": "hi"}], model="m")
    assert sent[0] < 2 * MAX_EVENT_BYTES  # the client hung up near the bound, not after the whole stream


def test_decoded_event_names_are_remembered_up_to_their_bound() -> None:
    sse._NAMES.clear()
    body = b"".join(b"event: e%d\ndata: {}\n\n" % number for number in range(sse.MAX_NAMES + 1))
    events = SseDecoder().feed(body)
    assert [event.event for event in events] == [f"e{number}" for number in range(sse.MAX_NAMES + 1)]
    assert len(sse._NAMES) == sse.MAX_NAMES  # the one past the bound was decoded, not remembered
    assert SseDecoder().feed(b"event: e0\ndata: 1\n\n") == [SseEvent("e0", b"1")]
