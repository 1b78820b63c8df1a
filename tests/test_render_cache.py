"""The local engine's rendered-token cache: each turn renders and tokenizes only the lane's new items, and
the ids equal a full render's, for every template loopwire ships, with and without tools and instructions,
across user messages, reasoning, parallel tool calls, real source files as tool outputs and developer
messages; a template that rewrites earlier turns is detected and rendered in full, counted in /metrics."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerProcess, make_async_client, make_client

pytest.importorskip("transformers")

from render_script import READ_FILE, run_script, summary

from loopwire.engines.local.scratch import build_tokenizer
from loopwire.engines.local.template import Template

SHIPPED = sorted(
    path.name.removesuffix(".jinja")
    for path in resources.files("loopwire.engines.local").joinpath("templates").iterdir()
    if path.name.endswith(".jinja")
)

# Like templates that drop past thinking: an assistant turn's text shows only after the last user message.
REWRITING = """
{%- set last_user = namespace(i=-1) %}
{%- for m in messages %}{% if m.role == 'user' %}{% set last_user.i = loop.index0 %}{% endif %}{% endfor %}
{%- for m in messages %}
{{- '<|im_start|>' + m.role + '\\n' }}
{%- if m.role != 'assistant' or loop.index0 > last_user.i %}{{ m.content }}{% endif %}
{{- '<|im_end|>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}
"""


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tokenizer()


def test_every_shipped_template_is_listed() -> None:
    assert set(SHIPPED) >= {"plain", "qwen_style"}


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("with_tools", [False, True])
@pytest.mark.parametrize("instructions", [None, "You are a coding agent."])
def test_incremental_ids_equal_a_full_render(
    tokenizer: Any, name: str, with_tools: bool, instructions: str | None
) -> None:
    source = resources.files("loopwire.engines.local").joinpath("templates", f"{name}.jinja").read_text()
    counts = summary(
        run_script(
            Template(tokenizer, source), tools=(READ_FILE,) if with_tools else (), instructions=instructions
        )
    )
    assert counts.get("full:no_render_state") == 1, counts  # the first turn only
    # A call arriving after the assistant message the last turn ended with joins that message.
    assert counts.get("fallback:joins_last_message") == 1, counts
    # qwen_style groups consecutive tool outputs under one user turn: the second one rewrites the first's end.
    regroups = 1 if name == "qwen_style" else 0
    assert counts.get("fallback:prefix_changed", 0) == regroups, counts
    assert counts["appended"] == 13 - 2 - regroups, counts


def test_a_template_that_rewrites_earlier_turns_is_detected_and_rendered_in_full(tokenizer: Any) -> None:
    counts = summary(run_script(Template(tokenizer, REWRITING), tools=(), instructions=None))
    assert counts == {"full:no_render_state": 1, "fallback:template_not_append_only": 12}, counts


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory, local_model_dir: Path) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("render-cache")
    extra = ("--engine", "local", "--model", str(local_model_dir))
    proc = ServerProcess("memory", directory / "server.log", extra, ready_timeout_s=120.0).start()
    try:
        yield proc
    finally:
        proc.stop()


def render_counts(server: ServerProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"{server.origin}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("loopwire_local_renders_total{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels.removeprefix("loopwire_local_renders_total")] = float(value)
    return counts


def test_http_turns_render_in_full_and_are_counted(local_server: ServerProcess) -> None:
    before = render_counts(local_server)
    with make_client(local_server.base_url) as client:
        first = client.responses.create(model="tiny", input="Hello.", max_output_tokens=3, store=True)
        second = client.responses.create(
            model="tiny", input="And again.", previous_response_id=first.id, max_output_tokens=3
        )
        assert second.usage is not None
    after = render_counts(local_server)
    # Over HTTP no render state survives a request: both turns render in full.
    full = '{path="full",reason="no_render_state"}'
    assert after.get(full, 0) - before.get(full, 0) == 2, (before, after)
    assert set(after) <= {full, '{path="appended",reason=""}'}, after


async def test_a_websocket_continuation_appends_to_the_lane_render(local_server: ServerProcess) -> None:
    before = render_counts(local_server)
    client = make_async_client(local_server.base_url)
    try:
        async with client.responses.connect() as conn:
            await conn.response.create(model="tiny", input="Hello.", store=False, max_output_tokens=3)
            first = await finished(conn)
            await conn.response.create(
                model="tiny", input="More.", store=False, max_output_tokens=3, previous_response_id=first
            )
            await finished(conn)
    finally:
        await client.close()
    after = render_counts(local_server)
    appended = '{path="appended",reason=""}'
    assert after.get(appended, 0) - before.get(appended, 0) == 1, (before, after)


async def finished(conn: Any) -> str:
    while True:
        event = await asyncio.wait_for(conn.recv(), 60)
        if event.type in ("response.completed", "response.incomplete", "response.failed", "error"):
            assert event.type != "error", event
            return str(event.response.id)
