"""Each quirk of the real llama-cpp-python server, shown on the server itself (so a new version that fixes
or changes it fails here and the workaround can go), then normalised through loopwire: an answer that is
right, or a clear error naming the cause; never a silent wrong answer (see engines/openai_chat/dialect.py).
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerProcess, make_client

from loopwire.bench.llama import LlamaServer

from .conftest import N_CTX, gateway
from .test_real_model import MODEL, SHORT, TIME, WEATHER, chat, prompt_tokens

pytestmark = pytest.mark.real

CHAT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": WEATHER["name"],
            "description": WEATHER["description"],
            "parameters": WEATHER["parameters"],
        },
    }
]
USER = [{"role": "user", "content": "Weather in Paris?"}]


def raw_stream(llama: LlamaServer, body: dict[str, Any]) -> tuple[int, list[dict[str, Any]], bytes]:
    """A streamed request straight to the server: (status, the decoded chunks, the raw body)."""
    request = urllib.request.Request(
        f"{llama.base_url}/chat/completions",
        data=json.dumps({**body, "stream": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        raw = answer.read()
        status = answer.status
    chunks = [
        json.loads(line[len(b"data: ") :])
        for line in raw.splitlines()
        if line.startswith(b"data: ") and line.strip() != b"data: [DONE]"
    ]
    return status, chunks, raw


def test_without_the_function_calling_chat_format_tools_are_dropped_and_a_forced_call_fails_clearly(
    real_model: tuple[Path, Path], tmp_path: Path
) -> None:
    python, model = real_model
    plain = LlamaServer(python, model, tmp_path / "plain.log", n_ctx=N_CTX, chat_format=None).start()
    try:
        status, answer = chat(
            plain, {"messages": USER, "tools": CHAT_TOOLS, "tool_choice": "required", "max_tokens": 8}
        )
        assert status == 200
        assert not answer["choices"][0]["message"].get("tool_calls")  # the quirk: text, and no error

        # the standard dialect passes "required" on; the dialect sends "auto" for several tools: either
        # way the server answers in text, and the turn fails saying why
        for dialect, tools in (("openai", [WEATHER]), ("llama-cpp-python", [WEATHER, TIME])):
            server = gateway(plain, tmp_path, "--engine-option", f"dialect={dialect}")
            try:
                with make_client(server.base_url) as client:
                    response = client.responses.create(
                        model=MODEL,
                        input="Weather in Paris?",
                        tools=tools,
                        tool_choice="required",
                        max_output_tokens=SHORT,
                    )
                assert response.status == "failed", (dialect, response.output)
                assert response.error is not None
                assert "without a tool call" in response.error.message
                assert "chatml-function-calling" in response.error.message
            finally:
                server.stop()
    finally:
        plain.stop()


def test_streamed_auto_tool_choice_is_an_empty_200_and_a_clear_failure_without_the_dialect(
    llama: LlamaServer, tmp_path: Path
) -> None:
    status, chunks, raw = raw_stream(llama, {"messages": USER, "tools": CHAT_TOOLS, "tool_choice": "auto"})
    assert status == 200 and raw.strip() == b"" and chunks == []  # the quirk: nothing at all

    # the standard dialect sends no tool_choice for auto (every server's default); this gateway adds an
    # explicit one, as a client of the chat API would, to meet the quirk
    server = gateway(llama, tmp_path, "--engine-option", 'extra_body={"tool_choice": "auto"}')
    try:
        with make_client(server.base_url) as client:
            started = time.monotonic()
            response = client.responses.create(model=MODEL, input="Weather in Paris?", tools=[WEATHER])
            assert time.monotonic() - started < 15  # a prompt, clear failure: no timeout, no retries
            assert response.status == "failed"
            assert response.error is not None and "empty stream" in response.error.message
            assert "dialect=llama-cpp-python" in response.error.message
            after = client.responses.create(model=MODEL, input="Say hi.", max_output_tokens=8)
            assert after.status in ("completed", "incomplete"), after.error  # the replica was not put aside
    finally:
        server.stop()


def test_non_streamed_auto_answers_an_empty_message(llama: LlamaServer) -> None:
    status, answer = chat(
        llama,
        {"messages": [{"role": "user", "content": "Say hi."}], "tools": CHAT_TOOLS, "tool_choice": "auto"},
    )
    assert status == 200
    message = answer["choices"][0]["message"]
    if not message.get("tool_calls"):
        assert message["content"] == ""  # the quirk the dialect's text fallback answers


def test_required_is_a_server_error(llama: LlamaServer) -> None:
    status, _ = chat(
        llama, {"messages": USER, "tools": CHAT_TOOLS, "tool_choice": "required", "max_tokens": 8}
    )
    assert status == 500  # the dialect sends one tool named, or an explicit auto for several


def test_an_assistant_message_with_null_content_is_a_server_error(llama: LlamaServer) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }

    def history(content: str | None) -> list[dict[str, Any]]:
        return [
            *USER,
            {"role": "assistant", "content": content, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
        ]

    assert chat(llama, {"messages": history(None), "max_tokens": 4})[0] == 500
    assert chat(llama, {"messages": history(""), "max_tokens": 4})[0] == 200  # what loopwire sends


def test_the_template_drops_tool_outputs(llama: LlamaServer) -> None:
    def history(output: str) -> list[dict[str, Any]]:
        call = {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        return [
            *USER,
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c", "content": output},
        ]

    # the quirk: a tool output of any length costs no prompt tokens (loopwire sends it as a user message;
    # test_tool_loop_chained_over_http_sends_the_output_to_the_model checks it reaches the model)
    assert prompt_tokens(llama, history("1")) == prompt_tokens(
        llama, history("a much longer tool output " * 8)
    )


def test_streams_carry_no_usage_and_the_dialect_reports_the_servers_count(
    llama: LlamaServer, real_server: ServerProcess
) -> None:
    messages = [{"role": "user", "content": "Name a fruit."}]
    status, chunks, _ = raw_stream(
        llama, {"messages": messages, "max_tokens": 4, "stream_options": {"include_usage": True}}
    )
    assert status == 200 and chunks
    assert all(not chunk.get("usage") for chunk in chunks)  # the quirk: stream_options is ignored
    with make_client(real_server.base_url) as client:
        response = client.responses.create(model=MODEL, input="Name a fruit.", max_output_tokens=SHORT)
    assert response.usage is not None
    assert response.usage.input_tokens == prompt_tokens(llama, messages)


def test_a_prompt_past_the_context_is_context_length_exceeded(
    llama: LlamaServer, real_server: ServerProcess
) -> None:
    """The server refuses a prompt longer than its n_ctx with HTTP 400 code context_length_exceeded (its
    Llama's "Requested tokens (N) exceed context window of M", reworded); through loopwire the turn fails
    with the same code and both sizes, streamed or not."""
    words = "lorem ipsum dolor sit amet " * 1200  # ~6,000 tokens > N_CTX
    status, answer = chat(llama, {"messages": [{"role": "user", "content": words}], "max_tokens": 4})
    error = json.loads(answer["raw"])["error"]
    assert status == 400 and error["code"] == "context_length_exceeded", answer
    assert f"maximum context length is {N_CTX} tokens" in error["message"]
    with make_client(real_server.base_url) as client:
        response = client.responses.create(model=MODEL, input=words, max_output_tokens=SHORT)
        assert response.status == "failed" and response.error is not None
        assert response.error.code == "context_length_exceeded", response.error.message
        assert f" tokens > {N_CTX})" in response.error.message
        streamed = client.responses.create(model=MODEL, input=words, max_output_tokens=SHORT, stream=True)
        with streamed as stream:
            events = list(stream)
        assert events[-1].type == "response.failed"
        assert events[-1].response.error.code == "context_length_exceeded"
