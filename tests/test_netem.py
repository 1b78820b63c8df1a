"""The link emulator (loopwire.netem) over real loopback sockets: delay, bandwidth and their per-direction
asymmetry within 10% of the setting, byte order under jitter, cuts, backpressure, half-close, many
connections, the CLI, uvloop, and one WebSocket turn against a real loopwire server over the `wan` profile.

Accuracy is measured as a median over several tries (the 2-core VM is noisy); no bound is tighter than 10%.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import random
import signal
import socket
import statistics
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import uvloop
import websockets
from conftest import ROOT, ServerProcess, free_port

from loopwire.netem import PROFILES, DirectionShape, LinkEmulator, LinkProfile
from loopwire.netem.profiles import GBIT, MBIT
from loopwire.netem.schedule import LinkSchedule
from loopwire.netem.timer import TimerCalibration

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
MB = 1_000_000


def shape(
    delay_ms: float = 0.0,
    bandwidth_bps: float | None = None,
    *,
    jitter_ms: float = 0.0,
    queue_limit_bytes: int | None = None,
) -> DirectionShape:
    return DirectionShape(delay_ms, jitter_ms, bandwidth_bps, queue_limit_bytes)


def link(up: DirectionShape, down: DirectionShape | None = None) -> LinkProfile:
    return LinkProfile("test", up, up if down is None else down)


def within(measured: float, expected: float, tolerance: float = 0.10) -> bool:
    return abs(measured - expected) <= tolerance * expected


# -- tiny in-process TCP servers ----------------------------------------------------------------------


class Server:
    """asyncio.start_server around a handler; records how each connection ended ("eof" or "reset")."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.endings: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._handler(reader, writer)
            self.endings.append("eof")
        except (ConnectionError, asyncio.IncompleteReadError):
            self.endings.append("reset")
        finally:
            writer.close()

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._run, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def read_to_end(reader: asyncio.StreamReader) -> tuple[bytes, str]:
    """Everything the peer sends, and how the stream ended: "eof" or "reset"."""
    chunks = []
    try:
        while data := await reader.read(65536):
            chunks.append(data)
    except ConnectionError:
        return b"".join(chunks), "reset"
    return b"".join(chunks), "eof"


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# -- the timing model ---------------------------------------------------------------------------------


def test_profiles_are_the_issue_numbers() -> None:
    lan, wan, mobile = PROFILES["lan"], PROFILES["wan"], PROFILES["mobile"]
    assert not PROFILES["loopback"].up.shaped and not PROFILES["loopback"].down.shaped
    assert lan.rtt_ms == 1 and lan.up.bandwidth_bps == lan.down.bandwidth_bps == GBIT
    assert wan.rtt_ms == 40 and wan.up.bandwidth_bps == 20 * MBIT and wan.down.bandwidth_bps == 100 * MBIT
    assert mobile.rtt_ms == 100 and mobile.up.bandwidth_bps == 5 * MBIT
    assert mobile.down.bandwidth_bps is not None and mobile.down.bandwidth_bps > mobile.up.bandwidth_bps


def test_schedule_queues_back_to_back_writes_behind_serialisation() -> None:
    schedule = LinkSchedule(shape(10.0, 8 * MBIT), random.Random(0))  # 1 MB/s: 1 ms per kB
    assert schedule.send(1000, now=0.0) == pytest.approx(0.001 + 0.010)
    # handed over while the link is still busy: waits for it, then serialises
    assert schedule.send(2000, now=0.0005) == pytest.approx(0.003 + 0.010)
    assert schedule.backlog_bytes(0.001) == pytest.approx(2000)
    # after an idle gap the link is free again: only its own serialisation and the delay
    assert schedule.send(1000, now=1.0) == pytest.approx(1.001 + 0.010)
    assert schedule.backlog_bytes(2.0) == 0


def test_schedule_jitter_is_seeded_and_never_reorders() -> None:
    def arrivals(seed: int) -> list[float]:
        schedule = LinkSchedule(shape(5.0, jitter_ms=4.0), random.Random(seed))
        return [schedule.send(100, now=i * 0.0005) for i in range(2000)]

    first = arrivals(1)
    assert first == arrivals(1)
    assert first != arrivals(2)
    assert all(a <= b for a, b in itertools.pairwise(first))
    delays = [arrival - i * 0.0005 for i, arrival in enumerate(first)]
    assert min(delays) >= 0.001 - 1e-9 and max(delays) <= 0.009 + 1e-9
    assert max(delays) - min(delays) > 0.005  # it does jitter


def test_timer_calibration_learns_the_loop_lateness() -> None:
    """A loop whose timers fire 0.8 ms late: after a while the bias arms them 0.8 ms early."""
    calibration = TimerCalibration()
    for _ in range(400):
        calibration.observe(0.0008 - calibration.bias)
    assert calibration.bias == pytest.approx(0.0008, rel=0.1)
    fixed = TimerCalibration(bias_s=0.0)
    fixed.observe(0.001)
    assert fixed.bias == 0 and fixed.stats().max_late_ms == pytest.approx(1.0)


# -- accuracy over real sockets -----------------------------------------------------------------------


async def test_one_way_delay_per_direction_within_10_percent() -> None:
    """up 20 ms, down 40 ms: each one-way time (stamped in-process on both ends) and the RTT."""
    arrived: list[float] = []
    replied: list[float] = []

    async def stamp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1):
            arrived.append(time.monotonic())
            writer.write(b"q")
            replied.append(time.monotonic())
            await writer.drain()

    async with Server(stamp) as server, LinkEmulator(server.port, link(shape(20), shape(40))) as emulator:
        ups, downs, rtts = [], [], []
        async with connect(emulator.port) as (reader, writer):
            for i in range(10):
                sent = time.monotonic()
                writer.write(b"p")
                await reader.readexactly(1)
                received = time.monotonic()
                if i == 0:
                    continue  # the first one also waits out the emulated TCP handshake (next test)
                ups.append(arrived[-1] - sent)
                downs.append(received - replied[-1])
                rtts.append(received - sent)
                await asyncio.sleep(random.uniform(0.001, 0.005))
        up, down, rtt = (statistics.median(values) * 1000 for values in (ups, downs, rtts))
        assert within(up, 20), f"up one-way {up:.2f} ms"
        assert within(down, 40), f"down one-way {down:.2f} ms"
        assert within(rtt, 60), f"rtt {rtt:.2f} ms"
        timer = emulator.timer_stats()  # the emulator's own view: its deliveries against their deadlines
        assert timer.count >= 18 and abs(timer.mean_error_ms) < 2.0, timer


@pytest.mark.parametrize("handshake", [True, False])
async def test_first_bytes_wait_one_rtt_for_the_emulated_handshake(handshake: bool) -> None:
    arrivals: asyncio.Queue[float] = asyncio.Queue()

    async def first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(1)
        arrivals.put_nowait(time.monotonic())

    profile = link(shape(30), shape(30))
    one_ways = []
    async with (
        Server(first) as server,
        LinkEmulator(server.port, profile, emulate_handshake=handshake) as emulator,
    ):
        for _ in range(5):
            async with connect(emulator.port) as (_, writer):
                sent = time.monotonic()
                writer.write(b"x")
                one_ways.append((await arrivals.get() - sent) * 1000)
    one_way = statistics.median(one_ways)
    expected = 30 + (60 if handshake else 0)
    assert within(one_way, expected), f"first byte after {one_ways} ms, expected {expected}"


async def timed_upload(port: int, payload: bytes, received_all: asyncio.Future[float]) -> float:
    async with connect(port) as (_, writer):
        sent = time.monotonic()
        writer.write(payload)
        return await received_all - sent


async def test_bandwidth_per_direction_within_10_percent() -> None:
    """20 Mbit/s up, 80 Mbit/s down, no delay: 1 MB up takes 0.4 s and 2 MB down 0.2 s (medians of 3)."""
    up_payload, down_payload = os.urandom(MB), os.urandom(2 * MB)
    done: list[asyncio.Future[float]] = []

    async def sink_or_source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command = await reader.readexactly(1)
        if command == b"d":
            writer.write(down_payload)
            await writer.drain()
            return
        total = 1
        while total < len(up_payload) and (data := await reader.read(65536)):
            total += len(data)
        done[-1].set_result(time.monotonic())

    profile = link(shape(0, 20 * MBIT), shape(0, 80 * MBIT))
    loop = asyncio.get_running_loop()
    async with Server(sink_or_source) as server, LinkEmulator(server.port, profile) as emulator:
        uploads, downloads = [], []
        for _ in range(3):
            done.append(loop.create_future())
            uploads.append(await timed_upload(emulator.port, b"u" + up_payload[1:], done[-1]))
            async with connect(emulator.port) as (reader, writer):
                started = time.monotonic()
                writer.write(b"d")
                assert await reader.readexactly(len(down_payload)) == down_payload
                downloads.append(time.monotonic() - started)
        up_s, down_s = statistics.median(uploads), statistics.median(downloads)
        assert within(up_s, 0.4), f"1 MB up at 20 Mbit/s took {up_s:.3f} s"
        assert within(down_s, 0.2), f"2 MB down at 80 Mbit/s took {down_s:.3f} s"
        assert sum(s.up.bytes for s in emulator.all_stats()) == 3 * (MB + 1)
        assert emulator.totals().bytes_down == 3 * 2 * MB


async def test_delay_and_bandwidth_compose_like_a_link() -> None:
    """10 ms + 500 kB at 20 Mbit/s: the last byte arrives after 0.2 s serialisation + 10 ms delay."""
    payload = os.urandom(500_000)
    done: list[asyncio.Future[float]] = []

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = 0
        while total < len(payload) and (data := await reader.read(65536)):
            total += len(data)
        done[-1].set_result(time.monotonic())

    profile = link(shape(10, 20 * MBIT))
    async with (
        Server(sink) as server,
        LinkEmulator(server.port, profile, emulate_handshake=False) as emulator,
    ):
        times = []
        for _ in range(3):
            done.append(asyncio.get_running_loop().create_future())
            times.append(await timed_upload(emulator.port, payload, done[-1]))
    measured = statistics.median(times)
    assert within(measured, 0.21), f"took {measured:.3f} s"


# -- integrity, cuts, flow control --------------------------------------------------------------------


async def test_bytes_keep_their_order_under_jitter() -> None:
    """4 MB of random bytes through an echo with 3 +- 3 ms jitter each way and segmenting at 200 Mbit/s."""
    payload = os.urandom(4 * MB)
    jittery = shape(3, 200 * MBIT, jitter_ms=3.0)
    async with (
        Server(echo) as server,
        LinkEmulator(server.port, link(jittery), seed=7) as emulator,
        connect(emulator.port) as (reader, writer),
    ):

        async def send() -> None:
            for offset in range(0, len(payload), 50_000):
                writer.write(payload[offset : offset + 50_000])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        echoed, ending = await read_to_end(reader)
        await sender
        stats = emulator.stats(1)
    assert ending == "eof"
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    assert stats.up.bytes == stats.down.bytes == len(payload)
    assert stats.up.chunks > 10 and stats.up.max_queue_segments > 10


async def test_cut_next_connection_after_n_bytes_up() -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data, ending = await read_to_end(reader)
        received.put_nowait(data)
        if ending == "reset":
            raise ConnectionResetError

    payload = os.urandom(MB)
    async with Server(sink) as server, LinkEmulator(server.port, link(shape(2))) as emulator:
        emulator.cut_next_after(300_000, "up")
        async with connect(emulator.port) as (reader, writer):
            writer.write(payload)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            _, client_ending = await read_to_end(reader)
        cut_short = await received.get()
        stats = emulator.stats(1)
        # the next connection is not cut
        async with connect(emulator.port) as (reader, writer):
            writer.write(b"fine")
            writer.write_eof()
            await read_to_end(reader)
        fine = await received.get()
    assert client_ending == "reset"
    assert server.endings[0] == "reset"
    assert stats.close_reason == "cut" and stats.up.bytes == 300_000
    assert 0 < len(cut_short) <= 300_000 and cut_short == payload[: len(cut_short)]
    assert fine == b"fine" and emulator.stats(2).close_reason == "closed"


async def test_cut_connection_mid_stream_down() -> None:
    payload = os.urandom(2 * MB)

    async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(1)
        for offset in range(0, len(payload), 65536):
            writer.write(payload[offset : offset + 65536])
            await writer.drain()

    async with Server(source) as server, LinkEmulator(server.port, link(shape(1, 200 * MBIT))) as emulator:
        async with connect(emulator.port) as (reader, writer):
            await emulator.wait_for_accepted(1)
            (connection_id,) = emulator.open_connections()
            writer.write(b"go")
            first = await reader.readexactly(100_000)
            passed = emulator.stats(connection_id).down.bytes  # more than we read: socket buffers
            emulator.cut_after(connection_id, 250_000, "down")
            rest, ending = await read_to_end(reader)
        stats = emulator.stats(connection_id)
    assert ending == "reset"
    assert stats.close_reason == "cut" and stats.down.bytes == passed + 250_000
    got = first + rest
    assert len(got) <= stats.down.bytes and got == payload[: len(got)]
    assert len(got) >= 100_000


async def test_cut_one_and_cut_all() -> None:
    async with Server(echo) as server, LinkEmulator(server.port, link(shape(1))) as emulator:
        async with connect(emulator.port) as a, connect(emulator.port) as b, connect(emulator.port) as c:
            for _, writer in (a, b, c):
                writer.write(b"hi")
            for reader, _ in (a, b, c):
                assert await reader.readexactly(2) == b"hi"
            ids = emulator.open_connections()
            assert ids == [1, 2, 3]
            assert emulator.cut(2) and not emulator.cut(2)
            assert (await read_to_end(b[0]))[1] == "reset"
            a[1].write(b"still")
            assert await a[0].readexactly(5) == b"still"
            assert emulator.cut_all() == 2
            assert (await read_to_end(a[0]))[1] == "reset"
            assert (await read_to_end(c[0]))[1] == "reset"
        await asyncio.sleep(0.05)
    assert server.endings == ["reset"] * 3
    assert [s.close_reason for s in emulator.all_stats()] == ["cut"] * 3


async def test_a_reset_from_one_side_reaches_the_other_behind_its_data() -> None:
    received: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.put_nowait(await read_to_end(reader))

    async with Server(sink) as server, LinkEmulator(server.port, link(shape(10))) as emulator:
        _, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
        writer.write(b"last words")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST from the client
        data, ending = await received.get()
        await asyncio.sleep(0.01)
        stats = emulator.stats(1)
    assert (data, ending) == (b"last words", "reset")
    assert stats.close_reason == "reset"


async def test_slow_reader_backs_up_into_the_sender_not_into_memory() -> None:
    """The target sends 24 MB as fast as it can; the client reads nothing for 0.5 s, then everything."""
    payload = os.urandom(24 * MB)
    sent = 0

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        for offset in range(0, len(payload), 65536):
            writer.write(payload[offset : offset + 65536])
            await writer.drain()
            sent = offset + 65536

    cap = 256 * 1024
    async with (
        Server(firehose) as server,
        LinkEmulator(server.port, link(shape(2)), max_held_bytes=cap) as emulator,
        connect(emulator.port) as (reader, _),
    ):
        await asyncio.sleep(0.5)
        stalled_at = sent
        held = emulator.stats(1).down
        data = await reader.readexactly(len(payload))
        stats = emulator.stats(1).down
    assert stalled_at < len(payload) // 2, "the sender was never slowed down"
    assert held.read_pauses >= 1
    assert stats.max_queue_bytes <= cap, stats
    assert stats.max_receiver_buffer_bytes <= 64 * 1024 + 256 * 1024, stats
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()


async def test_queue_limit_bounds_the_backlog_and_keeps_the_rate() -> None:
    """8 Mbit/s with a 32 KiB queue: 400 kB still take 0.4 s, and no more than the queue waits inside."""
    payload = os.urandom(400_000)
    done = asyncio.get_running_loop().create_future()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = 0
        while total < len(payload) and (data := await reader.read(65536)):
            total += len(data)
        done.set_result(time.monotonic())

    limited = shape(0, 8 * MBIT, queue_limit_bytes=32 * 1024)
    async with Server(sink) as server, LinkEmulator(server.port, link(limited)) as emulator:
        took = await timed_upload(emulator.port, payload, done)
        stats = emulator.stats(1).up
    assert within(took, 0.4), f"took {took:.3f} s"
    assert stats.read_pauses >= 1
    assert 30 * 1024 <= stats.max_backlog_bytes <= 32 * 1024, stats
    assert stats.chunks < 100, stats  # read in pieces of a useful size, not a few bytes at a time


async def test_half_close_is_forwarded_both_ways() -> None:
    async def count_then_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's EOF has crossed the link
        writer.write(f"got {len(data)}".encode())
        await writer.drain()
        writer.write_eof()

    async with (
        Server(count_then_answer) as server,
        LinkEmulator(server.port, link(shape(5))) as emulator,
        connect(emulator.port) as (reader, writer),
    ):
        writer.write(b"x" * 10_000)
        writer.write_eof()
        answer, ending = await read_to_end(reader)
        await asyncio.sleep(0.02)
        stats = emulator.stats(1)
    assert (answer, ending) == (b"got 10000", "eof")
    assert stats.up.eof_forwarded and stats.down.eof_forwarded
    assert stats.close_reason == "closed"


async def test_many_concurrent_connections() -> None:
    async def one(port: int) -> bool:
        payload = os.urandom(random.randint(1, 200_000))
        async with connect(port) as (reader, writer):
            writer.write(payload)
            writer.write_eof()
            echoed, ending = await read_to_end(reader)
        return echoed == payload and ending == "eof"

    async with (
        Server(echo) as server,
        LinkEmulator(server.port, link(shape(5, 100 * MBIT))) as emulator,
    ):
        results = await asyncio.gather(*(one(emulator.port) for _ in range(60)))
        await asyncio.sleep(0.05)
        totals = emulator.totals()
        stats = emulator.all_stats()
    assert all(results)
    assert totals.connections_accepted == 60 and totals.connections_open == 0
    assert totals.bytes_up == totals.bytes_down == sum(s.up.bytes for s in stats)
    assert {s.close_reason for s in stats} == {"closed"}


async def test_unreachable_target_resets_the_client() -> None:
    async with Server(echo) as server:
        port = server.port
    async with LinkEmulator(port, "loopback") as emulator, connect(emulator.port) as (reader, _):
        _, ending = await read_to_end(reader)
        stats = emulator.stats(1)
    assert ending == "reset" and stats.close_reason == "connect failed"


def test_runs_on_uvloop() -> None:
    async def scenario() -> tuple[float, bool, str]:
        async with Server(echo) as server, LinkEmulator(server.port, link(shape(25))) as emulator:
            payload = os.urandom(MB)
            async with connect(emulator.port) as (reader, writer):
                rtts = []
                for _ in range(8):
                    started = time.monotonic()
                    writer.write(b"p")
                    await reader.readexactly(1)
                    rtts.append(time.monotonic() - started)
                rtt = statistics.median(rtts[1:])  # the first one waits out the emulated handshake
                writer.write(payload)
                intact = await reader.readexactly(len(payload)) == payload
                emulator.cut_all()
                _, ending = await read_to_end(reader)
            return rtt, intact, ending

    rtt, intact, ending = uvloop.run(scenario())
    assert within(rtt * 1000, 50), f"rtt {rtt * 1000:.2f} ms"
    assert intact and ending == "reset"


# -- the command line ---------------------------------------------------------------------------------


async def test_cli_forwards_and_stops_cleanly() -> None:
    async with Server(echo) as server:
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "loopwire.netem",
            "--listen",
            f"127.0.0.1:{port}",
            "--target",
            f"127.0.0.1:{server.port}",
            "--profile",
            "wan",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            assert process.stdout is not None
            banner = await asyncio.wait_for(process.stdout.readline(), 10)
            assert b"wan: RTT 40 ms" in banner, banner
            async with connect(port) as (reader, writer):
                writer.write(b"ping")
                writer.write_eof()
                assert await read_to_end(reader) == (b"ping", "eof")
        finally:
            process.send_signal(signal.SIGTERM)
            rest = await asyncio.wait_for(process.stdout.read(), 10) if process.stdout else b""
            code = await asyncio.wait_for(process.wait(), 10)
    assert code == 0, rest
    assert b"1 connections (0 open), 4 B up, 4 B down" in rest, rest


# -- a real loopwire server over the wan profile ------------------------------------------------------


async def test_websocket_turn_over_wan_takes_at_least_one_rtt(tmp_path: Path) -> None:
    server = await asyncio.to_thread(ServerProcess("memory", tmp_path / "server.log").start)
    try:
        async with LinkEmulator(server.port, "wan") as emulator:
            url = f"ws://127.0.0.1:{emulator.port}/v1/responses"
            started = time.monotonic()
            async with websockets.connect(url, max_size=None) as socket:
                opened = time.monotonic()
                request = {"type": "response.create", "model": "sim", "input": "over the wan", "store": False}
                await socket.send(json.dumps(request))
                types = []
                while True:
                    event = json.loads(await socket.recv())
                    types.append(event["type"])
                    if event["type"] in ("response.completed", "error", "response.failed"):
                        break
                turn = time.monotonic() - opened
            totals = emulator.totals()
    finally:
        await asyncio.to_thread(server.stop)
    rtt = PROFILES["wan"].rtt_ms / 1000
    assert types[-1] == "response.completed", types
    # TCP handshake (held one RTT) + the HTTP upgrade (one RTT)
    assert opened - started >= 0.9 * 2 * rtt, f"connect took {opened - started:.3f} s"
    assert turn >= 0.9 * rtt, f"turn took {turn:.3f} s"
    assert totals.bytes_up > 0 and totals.bytes_down > totals.bytes_up
