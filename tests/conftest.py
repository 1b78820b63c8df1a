"""Shared fixtures: a real `loopwire serve` subprocess on loopback, and official `openai` SDK clients for it.

`server` is one session-wide server on a temporary SQLite file; `server_factory` starts and stops extra
servers on a given SQLite path (for restart tests); `redis_server` is one session-wide real redis-server
(tests that stop or pause Redis start their own `RedisServer`). Nothing here is autouse. `ServerProcess`
and `free_port` are the benchmark's own (loopwire.bench.processes): tests and `loopwire bench` start
servers the same way.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from redis_server import RedisClusterProcesses, RedisSentinelProcesses, RedisServer, require_redis

from loopwire.bench.processes import ServerProcess as ServerProcess
from loopwire.bench.processes import free_port as free_port

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "sk-loopwire-test"


def keyed_post(server: ServerProcess, key: str) -> tuple[int, dict[str, str], dict[str, object]]:
    """One store=false create with this bearer key: (status, headers, body)."""
    request = urllib.request.Request(
        server.base_url + "/responses",
        data=b'{"model": "sim", "input": "hi", "store": false}',
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


async def chained_ws_turns(socket: Any, count: int) -> list[str]:
    """`count` stored turns ("turn 0", "turn 1", ...) chained on one raw WebSocket; their response ids."""
    completed: list[str] = []
    for index in range(count):
        body = {"type": "response.create", "model": "sim", "input": f"turn {index}"}
        if completed:
            body["previous_response_id"] = completed[-1]
        await socket.send(json.dumps(body))
        while (event := json.loads(await socket.recv()))["type"] != "response.completed":
            assert event["type"] != "error", event
        completed.append(event["response"]["id"])
    return completed


def make_client(base_url: str, *, strict: bool = False) -> openai.OpenAI:
    """A sync SDK client. `strict=True` makes the SDK validate every response body and streamed event
    against its pydantic types instead of constructing them loosely."""
    return openai.OpenAI(
        base_url=base_url, api_key=API_KEY, max_retries=0, timeout=20.0, _strict_response_validation=strict
    )


def make_async_client(base_url: str, *, strict: bool = False) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=base_url, api_key=API_KEY, max_retries=0, timeout=20.0, _strict_response_validation=strict
    )


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The sim engine; with LOOPWIRE_TEST_ENGINE=responses, loopwire's responses engine in front of a
    second, real loopwire (sim) as its upstream, so the same scenarios run through the gateway; with
    LOOPWIRE_TEST_ENGINE=openai-chat, the openai-chat engine in front of the chat-completions server at
    LOOPWIRE_TEST_UPSTREAM (the real-model tier starts a real llama.cpp server there), with the
    whitespace-separated extra `serve` arguments in LOOPWIRE_TEST_SERVE_ARGS."""
    directory = tmp_path_factory.mktemp("loopwire-server")
    engine = os.environ.get("LOOPWIRE_TEST_ENGINE", "sim")
    upstream: ServerProcess | None = None
    extra: tuple[str, ...] = ()
    if engine == "responses":
        upstream = ServerProcess("memory", directory / "upstream.log").start()
        extra = ("--engine", "responses", "--upstream", upstream.base_url)
    elif engine == "openai-chat":
        url = os.environ.get("LOOPWIRE_TEST_UPSTREAM")
        if not url:
            raise pytest.UsageError("LOOPWIRE_TEST_ENGINE=openai-chat needs LOOPWIRE_TEST_UPSTREAM=URL")
        extra = ("--engine", "openai-chat", "--upstream", url)
        extra += tuple(os.environ.get("LOOPWIRE_TEST_SERVE_ARGS", "").split())
    elif engine != "sim":
        raise pytest.UsageError(f"LOOPWIRE_TEST_ENGINE takes sim, responses or openai-chat, got {engine!r}")
    proc = ServerProcess(f"sqlite:{directory / 'db'}", directory / "server.log", extra).start()
    try:
        yield proc
    finally:
        proc.stop()
        if upstream is not None:
            upstream.stop()


@pytest.fixture(scope="session")
def base_url(server: ServerProcess) -> str:
    return server.base_url


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[[Path], ServerProcess]]:
    """Start servers on a given SQLite path; every one still running is stopped at teardown."""
    started: list[ServerProcess] = []

    def start(db_path: Path) -> ServerProcess:
        log = tmp_path / f"server-{len(started)}.log"
        proc = ServerProcess(f"sqlite:{db_path}", log)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server shared by the tests that never stop it; each test keeps to its own key prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """A three-master Redis Cluster, for the store suite through redis-py's RedisCluster client."""
    require_redis()
    cluster = RedisClusterProcesses(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelProcesses]:
    """A Redis master behind a Sentinel, for the store suite through a redis+sentinel:// URL."""
    require_redis()
    sentinel = RedisSentinelProcesses(tmp_path_factory.mktemp("redis-sentinel"))
    try:
        yield sentinel.start()
    finally:
        sentinel.stop()


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with make_client(base_url) as sdk:
        yield sdk


@pytest.fixture
def strict_client(base_url: str) -> Iterator[openai.OpenAI]:
    with make_client(base_url, strict=True) as sdk:
        yield sdk


@pytest.fixture
async def async_client(base_url: str) -> openai.AsyncOpenAI:
    sdk = make_async_client(base_url)
    try:
        yield sdk  # type: ignore[misc]
    finally:
        await sdk.close()


WEATHER_PROMPT = "What is the weather in Paris?"
WEATHER_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.fixture(scope="session")
def local_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised Qwen2-style model with a trained BPE tokenizer and a chat template."""
    from loopwire.engines.local.scratch import build_model_dir

    return build_model_dir(tmp_path_factory.mktemp("local-model") / "tiny")


@pytest.fixture(scope="session")
def taught_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny model taught to answer the weather question with a get_weather tool call."""
    from transformers import AutoTokenizer

    from loopwire.engines.base import ToolSpec
    from loopwire.engines.local.messages import build_messages, build_tools
    from loopwire.engines.local.scratch import build_model_dir, teach
    from loopwire.engines.local.template import Template
    from loopwire.protocol.items import Message

    directory = build_model_dir(tmp_path_factory.mktemp("local-model") / "taught", seed=1)
    template = Template(AutoTokenizer.from_pretrained(directory, local_files_only=True))
    tools = build_tools([ToolSpec("get_weather", "Weather for a city.", WEATHER_PARAMETERS)])
    prompt = template.text(
        build_messages([Message(role="user", content=WEATHER_PROMPT)], None), tools, generate=True
    )
    teach(directory, [(prompt, WEATHER_CALL)], steps=60)
    return directory


WEATHER_PARAMETERS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    """The sum of a /metrics sample family's values whose labels include `labels` (0 when none)."""
    with urllib.request.urlopen(f"{server.origin}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    total = 0.0
    for line in text.splitlines():
        found = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if found is None:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', found.group(1) or ""))
        if all(have.get(key) == value for key, value in labels.items()):
            total += float(found.group(2))
    return total
