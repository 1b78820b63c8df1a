"""The compaction payload against real `loopwire serve` subprocesses, with the official `openai` SDK: a
decompression bomb is refused quickly over HTTP and WebSocket mode while the server's RSS stays flat, and
only payloads signed with the deployment's secret are read back (a forged one reads as a foreign one).
Plus the payload bounds at their edges, in process, through the same check both transports use.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import ServerProcess, make_async_client, make_client

from loopwire.core.bounds import check_input
from loopwire.core.limits import Limits
from loopwire.protocol.compaction import SummaryCodec, decode_summary, encode_summary
from loopwire.protocol.errors import ProtocolError
from loopwire.protocol.items import Compaction, Message
from loopwire.server import compaction_secret

MODEL = "sim"
GIB = 1024 * 1024 * 1024
SECRET = b"test-deployment-secret-0123456789"
PAYLOAD_LIMIT = 4 * 1024 * 1024  # raised so a 1 GiB bomb (~1.4 MB) reaches the bounded inflate
RSS_GROWTH_LIMIT_KB = 50 * 1024
ANSWER_WITHIN_S = 5.0


def _bomb_bytes(inflated: int) -> bytes:
    """zlib data inflating to `inflated` zero bytes, compressed a MiB at a time."""
    packer = zlib.compressobj(9)
    chunk = bytes(1024 * 1024)
    parts = [packer.compress(chunk) for _ in range(inflated // len(chunk))]
    return b"".join(parts) + packer.flush()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return _bomb_bytes(GIB)


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secret") / "compaction.secret"
    path.write_bytes(SECRET + b"\n")
    return path


@pytest.fixture(scope="module")
def signing_server(tmp_path_factory: pytest.TempPathFactory, secret_file: Path) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("compaction")
    server = ServerProcess(
        "memory",
        directory / "server.log",
        (
            "--compaction-secret-file",
            str(secret_file),
            "--limit",
            f"max_compaction_payload_chars={PAYLOAD_LIMIT}",
        ),
    ).start()
    yield server
    server.stop()


def memory_kb(server: ServerProcess) -> dict[str, int]:
    assert server.proc is not None
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def window(payload: str) -> list[dict[str, Any]]:
    return [{"type": "compaction", "encrypted_content": payload}, {"role": "user", "content": "go on"}]


def assert_refused(error: Any, code: str) -> None:
    assert error.code == code, error
    assert error.param == "input[0].encrypted_content", error
    assert error.type == "invalid_request_error", error
    assert "encrypted_content" in error.message


def test_signed_bomb_over_http_is_refused_quickly_and_rss_stays_flat(
    signing_server: ServerProcess, bomb: bytes
) -> None:
    payload = SummaryCodec(SECRET).seal(bomb)
    assert len(payload) < PAYLOAD_LIMIT  # past the size bound, into the bounded inflate
    before = memory_kb(signing_server)
    with make_client(signing_server.base_url) as client:
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(openai.BadRequestError) as refused:
                client.responses.create(model=MODEL, input=window(payload), store=False)  # type: ignore[arg-type]
            assert time.monotonic() - started < ANSWER_WITHIN_S
            assert refused.value.status_code == 400
            assert_refused(refused.value, "compaction_too_large")
        assert client.responses.create(model=MODEL, input="still here?", store=False).status == "completed"
    after = memory_kb(signing_server)
    assert after["VmHWM"] - before["VmHWM"] < RSS_GROWTH_LIMIT_KB, (before, after)
    assert after["VmRSS"] - before["VmRSS"] < RSS_GROWTH_LIMIT_KB, (before, after)


async def test_signed_bomb_over_websocket_is_refused_quickly_and_rss_stays_flat(
    signing_server: ServerProcess, bomb: bytes
) -> None:
    payload = SummaryCodec(SECRET).seal(bomb)
    before = memory_kb(signing_server)
    client = make_async_client(signing_server.base_url)
    try:
        async with client.responses.connect() as conn:
            for _ in range(3):
                started = time.monotonic()
                await conn.response.create(model=MODEL, input=window(payload), store=False)  # type: ignore[arg-type]
                event = await asyncio.wait_for(conn.recv(), ANSWER_WITHIN_S)
                assert time.monotonic() - started < ANSWER_WITHIN_S
                assert event.type == "error", event
                assert event.status == 400
                assert_refused(event.error, "compaction_too_large")
            await conn.response.create(model=MODEL, input="still here?", store=False)
            while (
                event := await asyncio.wait_for(conn.recv(), ANSWER_WITHIN_S)
            ).type != "response.completed":
                assert event.type not in ("error", "response.failed"), event
    finally:
        await client.close()
    after = memory_kb(signing_server)
    assert after["VmHWM"] - before["VmHWM"] < RSS_GROWTH_LIMIT_KB, (before, after)


def test_unsigned_bomb_is_never_inflated_and_reads_as_foreign(
    signing_server: ServerProcess, bomb: bytes
) -> None:
    """A bomb without this deployment's signature is a foreign payload: not inflated, the turn completes."""
    forged = SummaryCodec(b"someone-else's-secret-0123456789").seal(bomb)
    before = memory_kb(signing_server)
    with make_client(signing_server.base_url) as client:
        started = time.monotonic()
        response = client.responses.create(model=MODEL, input=window(forged), store=False)  # type: ignore[arg-type]
        assert time.monotonic() - started < ANSWER_WITHIN_S
        assert response.status == "completed"
    after = memory_kb(signing_server)
    assert after["VmHWM"] - before["VmHWM"] < RSS_GROWTH_LIMIT_KB, (before, after)


def test_payload_past_its_length_bound_is_refused(
    signing_server: ServerProcess,
) -> None:
    oversized = "lw2:" + "A" * (PAYLOAD_LIMIT - 3)  # one character past the bound, never decoded
    with make_client(signing_server.base_url) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(model=MODEL, input=window(oversized), store=False)  # type: ignore[arg-type]
        assert_refused(refused.value, "string_above_max_length")
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.compact(model=MODEL, input=window(oversized))  # type: ignore[arg-type]
        assert_refused(refused.value, "string_above_max_length")
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.input_tokens.count(model=MODEL, input=window(oversized))  # type: ignore[arg-type]
        assert_refused(refused.value, "string_above_max_length")


# -- only this deployment's payloads are read back -----------------------------------------------------------

HISTORY = [
    {"role": "user", "content": "We are designing a suspension bridge over a wide river."},
    {"role": "assistant", "content": "A suspension bridge suits a long span; the towers carry the cables."},
    {"role": "user", "content": "It must carry two railway tracks and a footpath."},
]


def _input_tokens(client: openai.OpenAI, payload: str) -> int:
    response = client.responses.create(model=MODEL, input=window(payload), store=False)  # type: ignore[arg-type]
    assert response.status == "completed" and response.usage is not None
    return response.usage.input_tokens


@pytest.fixture(scope="module")
def sharing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A second node of the signing server's deployment: the same secret, given through the environment."""
    directory = tmp_path_factory.mktemp("sharing")
    server = ServerProcess(
        "memory", directory / "server.log", env={compaction_secret.ENV_VAR: SECRET.decode()}
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stranger_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Another deployment: no secret given, so it generates its own beside its SQLite store."""
    directory = tmp_path_factory.mktemp("stranger")
    env = {key: value for key, value in os.environ.items() if key != compaction_secret.ENV_VAR}
    server = ServerProcess(f"sqlite:{directory / 'db'}", directory / "server.log", env=env).start()
    yield server
    server.stop()


def test_summaries_are_read_back_by_the_deployment_only(
    signing_server: ServerProcess, sharing_server: ServerProcess, stranger_server: ServerProcess
) -> None:
    with make_client(signing_server.base_url) as client:
        compacted = client.responses.compact(model=MODEL, input=HISTORY)  # type: ignore[arg-type]
        payload = compacted.output[-1].encrypted_content  # type: ignore[union-attr]
        assert payload.startswith("lw2:")
        read = _input_tokens(client, payload)
        foreign = _input_tokens(client, "gAAAAB" + "x" * 40)  # another server's format: today's None
        forged = SummaryCodec(b"not-this-deployment's-secret-000").encode("[user] anything at all here")
        assert _input_tokens(client, forged) == foreign  # a forged payload reads exactly like a foreign one
        tampered = payload[:-6] + ("AAAAAA" if payload[-6:] != "AAAAAA" else "BBBBBB")
        assert _input_tokens(client, tampered) == foreign
        assert read > foreign  # the genuine summary is read back: more input than the placeholder
        # compact treats an unreadable payload as before: it adds nothing to the summary
        again = client.responses.compact(model=MODEL, input=window(forged))  # type: ignore[arg-type]
        summary_of_forged = again.output[-1].encrypted_content  # type: ignore[union-attr]
        emptied = client.responses.compact(model=MODEL, input=[{"role": "user", "content": "go on"}])
        assert _input_tokens(client, summary_of_forged) == _input_tokens(
            client,
            emptied.output[-1].encrypted_content,  # type: ignore[union-attr]
        )
    with make_client(sharing_server.base_url) as client:
        assert _input_tokens(client, payload) == read  # same secret: the other node reads it back
    with make_client(stranger_server.base_url) as client:
        assert _input_tokens(client, payload) == foreign  # another deployment: not read
    assert "must share one" in stranger_server.log_text()


def test_generated_secret_is_kept_beside_the_sqlite_store(tmp_path: Path) -> None:
    first = compaction_secret.resolve(None, f"sqlite:{tmp_path / 'db'}", {})
    second = compaction_secret.resolve(None, f"sqlite:{tmp_path / 'db'}", {})
    assert first.secret == second.secret and not first.shared
    path = tmp_path / ("db" + compaction_secret.FILE_SUFFIX)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no draft left behind
    memory = compaction_secret.resolve(None, "memory", {})
    assert memory.secret != compaction_secret.resolve(None, "memory", {}).secret
    from_env = compaction_secret.resolve(None, "memory", {compaction_secret.ENV_VAR: "e" * 16})
    assert from_env.secret == b"e" * 16 and from_env.shared
    with pytest.raises(ValueError, match="at least 16 bytes"):
        compaction_secret.resolve(None, "memory", {compaction_secret.ENV_VAR: "short"})


# -- the bounds at their edges, through check_input (both transports and /compact call it) ----------------


def _refusal(items: list[Any], limits: Limits) -> ProtocolError | None:
    try:
        check_input(items, limits)
    except ProtocolError as error:
        return error
    return None


def test_inflated_size_at_the_bound_passes_and_one_past_is_refused() -> None:
    limits = Limits(max_compaction_summary_bytes=1000)
    at = Compaction(encrypted_content=encode_summary("s" * 1000))
    past = Compaction(encrypted_content=encode_summary("s" * 1001))
    assert _refusal([Message(role="user", content="hi"), at], limits) is None
    error = _refusal([Message(role="user", content="hi"), past], limits)
    assert error is not None and error.status == 400
    assert error.param == "input[1].encrypted_content" and error.code == "compaction_too_large"


def test_payload_length_at_the_bound_passes_and_one_past_is_refused() -> None:
    payload = encode_summary("a short summary")
    limits = Limits(max_compaction_payload_chars=len(payload))
    assert _refusal([Compaction(encrypted_content=payload)], limits) is None
    error = _refusal([Compaction(encrypted_content=payload + "=")], limits)
    assert error is not None and error.param == "input[0].encrypted_content"
    assert error.code == "string_above_max_length"


def test_engines_read_back_only_signed_payloads_within_the_bounds() -> None:
    assert decode_summary(encode_summary("we fixed the parser")) == "we fixed the parser"
    assert decode_summary(SummaryCodec(b"x" * 32).encode("we fixed the parser")) is None
    assert decode_summary("lw1:" + "eJzLSM3JyVcozy/KSQEAGgQEXQ==") is None  # the old unsigned format
    assert decode_summary(SummaryCodec(b"x" * 32).seal(_bomb_bytes(64 * 1024 * 1024))) is None
