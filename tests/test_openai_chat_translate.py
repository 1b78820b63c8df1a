"""Responses items and request fields into a chat-completions request: every item kind, tools, tool choice,
sampling, the cache key, settings validation, and round trips through the chunk parser and Turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from loopwire.core.turn import Turn
from loopwire.engines.base import EngineError, EngineRequest, NamedToolChoice, ToolChoice, ToolSpec
from loopwire.engines.common.affinity import affinity_token
from loopwire.engines.common.history_text import COMPACTION_PREFIX, UNREADABLE_COMPACTION
from loopwire.engines.openai_chat.chunks import ChunkParser
from loopwire.engines.openai_chat.settings import DEFAULT_MAX_OUTPUT_TOKENS, OpenAIChatSettings, chat_endpoint
from loopwire.engines.openai_chat.translate import (
    build_body,
    build_headers,
    build_messages,
    build_tools,
    encode_body,
    tool_fields,
)
from loopwire.protocol.compaction import encode_summary
from loopwire.protocol.context import EMPTY_CONTEXT
from loopwire.protocol.items import (
    Compaction,
    FunctionCall,
    FunctionCallOutput,
    InputFile,
    InputImage,
    InputItem,
    InputText,
    ItemReference,
    Message,
    OutputText,
    Reasoning,
    Refusal,
)
from loopwire.protocol.response import Response

FIXTURES = Path(__file__).parent / "fixtures" / "chat_chunks"
SETTINGS = OpenAIChatSettings(upstreams=("http://127.0.0.1:9/v1",))
WEATHER = ToolSpec(
    "get_weather",
    "Current weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
    True,
)
CLOCK = ToolSpec("clock")


def settings(**changes: Any) -> OpenAIChatSettings:
    return OpenAIChatSettings(upstreams=("http://127.0.0.1:9/v1",), **changes)


def request(items: list[InputItem], **fields: Any) -> EngineRequest:
    return EngineRequest(
        model=fields.pop("model", "client-model"), history=EMPTY_CONTEXT.extend(items), **fields
    )


def messages(items: list[InputItem], instructions: str | None = None, **changes: Any) -> list[dict[str, Any]]:
    return build_messages(items, instructions, settings(**changes))


# -- messages ------------------------------------------------------------------------------------------


def test_instructions_lead_as_a_system_message_and_only_when_given() -> None:
    items: list[InputItem] = [Message(role="user", content="hi")]
    assert messages(items, "Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert messages(items) == [{"role": "user", "content": "hi"}]  # per request: nothing inherited
    assert messages(items, "") == [{"role": "user", "content": "hi"}]


def test_every_message_role_and_content_shape() -> None:
    items: list[InputItem] = [
        Message(role="system", content="sys"),
        Message(role="developer", content=[InputText(text="dev one"), InputText(text="dev two")]),
        Message(role="user", content=[InputText(text="look"), InputText(text="closely")]),
        Message(
            role="user",
            content=[
                InputText(text="what is this?"),
                InputImage(image_url="data:image/png;base64,iVBORw0KGgo=", detail="low"),
                InputImage(image_url="https://example.com/cat.jpg"),
            ],
        ),
        Message(role="assistant", content=[OutputText(text="A cat"), OutputText(text=" on a mat.")]),
        Message(role="assistant", content=[Refusal(refusal="I can't help with that.")]),
        Message(role="assistant", content="plain", id="msg_1", status="completed", phase="final_answer"),
    ]
    assert messages(items) == [
        {"role": "system", "content": "sys"},
        {"role": "system", "content": "dev one\ndev two"},
        {"role": "user", "content": "look\nclosely"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
                },
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ],
        },
        {"role": "assistant", "content": "A cat on a mat."},
        {"role": "assistant", "content": "I can't help with that."},
        {"role": "assistant", "content": "plain"},
    ]
    assert messages(items[1:2], developer_role="developer") == [
        {"role": "developer", "content": "dev one\ndev two"}
    ]


def test_images_in_system_messages_become_markers_and_files_become_file_parts() -> None:
    items: list[InputItem] = [
        Message(
            role="system", content=[InputText(text="logo: "), InputImage(image_url="https://x/logo.png")]
        ),
        Message(
            role="user",
            content=[
                InputText(text="summarise"),
                InputFile(file_data="data:application/pdf;base64,JVBE", filename="a.pdf"),
            ],
        ),
    ]
    assert messages(items) == [
        {"role": "system", "content": "logo: \n<image>"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "summarise"},
                {
                    "type": "file",
                    "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
                },
            ],
        },
    ]


@pytest.mark.parametrize(
    "part",
    [InputImage(file_id="file-123"), InputFile(file_url="https://x/a.pdf")],
)
def test_content_a_chat_upstream_cannot_take_is_an_engine_error(part: InputImage | InputFile) -> None:
    items: list[InputItem] = [Message(role="user", content=[InputText(text="see"), part])]
    with pytest.raises(EngineError) as raised:
        messages(items)
    assert raised.value.code == "unsupported_content"


def test_function_calls_merge_into_the_assistant_message_before_them() -> None:
    items: list[InputItem] = [
        Message(role="user", content="weather in Paris and Oslo?"),
        Message(role="assistant", content=[OutputText(text="Checking both.")]),
        FunctionCall(call_id="call_a", name="get_weather", arguments='{"city":"Paris"}', id="fc_1"),
        FunctionCall(call_id="call_b", name="get_weather", arguments='{"city":"Oslo"}', id="fc_2"),
        FunctionCallOutput(call_id="call_a", output="18C"),
        FunctionCallOutput(call_id="call_b", output=[InputText(text="9C"), InputText(text="rain")]),
        FunctionCall(call_id="call_c", name="clock", arguments="{}"),
        FunctionCallOutput(call_id="call_c", output="12:00"),
        Message(role="assistant", content="Paris 18C, Oslo 9C and rain."),
    ]
    assert messages(items) == [
        {"role": "user", "content": "weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": "Checking both.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "9C\nrain"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_c", "type": "function", "function": {"name": "clock", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_c", "content": "12:00"},
        {"role": "assistant", "content": "Paris 18C, Oslo 9C and rain."},
    ]


def test_a_user_message_between_calls_starts_a_new_assistant_message() -> None:
    items: list[InputItem] = [
        FunctionCall(call_id="call_a", name="clock", arguments="{}"),
        Message(role="user", content="and?"),
        FunctionCall(call_id="call_b", name="clock", arguments="{}"),
    ]
    result = messages(items)
    assert [message["role"] for message in result] == ["assistant", "user", "assistant"]
    assert [len(message.get("tool_calls", ())) for message in result] == [1, 0, 1]


def test_tool_output_with_an_image_keeps_its_parts() -> None:
    output = [InputText(text="chart:"), InputImage(image_url="https://x/chart.png", detail="high")]
    result = messages(
        [
            FunctionCall(call_id="c", name="plot", arguments="{}"),
            FunctionCallOutput(call_id="c", output=output),
        ]
    )
    assert result[1] == {
        "role": "tool",
        "tool_call_id": "c",
        "content": [
            {"type": "text", "text": "chart:"},
            {"type": "image_url", "image_url": {"url": "https://x/chart.png", "detail": "high"}},
        ],
    }


def test_reasoning_is_dropped_by_default_and_does_not_split_a_merge() -> None:
    items: list[InputItem] = [
        Reasoning(id="rs_1", summary=[{"type": "summary_text", "text": "think first"}]),
        Message(role="assistant", content="Let me check."),
        Reasoning(id="rs_2", content=[{"type": "reasoning_text", "text": "need the tool"}]),
        FunctionCall(call_id="call_a", name="clock", arguments="{}"),
    ]
    dropped = messages(items)
    assert (
        len(dropped) == 1 and dropped[0]["content"] == "Let me check." and len(dropped[0]["tool_calls"]) == 1
    )
    assert "reasoning_content" not in dropped[0]

    kept = messages(items, reasoning="reasoning_content")
    assert len(kept) == 1
    assert kept[0]["reasoning_content"] == "think first\nneed the tool"
    ollama = messages(items, reasoning="reasoning")
    assert ollama[0]["reasoning"] == "think first\nneed the tool" and "reasoning_content" not in ollama[0]


def test_compaction_becomes_a_system_message_with_its_summary() -> None:
    items: list[InputItem] = [
        Message(role="user", content="first question"),
        Compaction(encrypted_content=encode_summary("[assistant] answered with 42"), id="cmp_1"),
        Compaction(encrypted_content="gAAAA-opaque-from-another-server"),
    ]
    result = messages(items)
    assert result[1] == {"role": "system", "content": COMPACTION_PREFIX + "[assistant] answered with 42"}
    assert result[2] == {"role": "system", "content": COMPACTION_PREFIX + UNREADABLE_COMPACTION}


def test_an_item_reference_never_reaches_the_engine() -> None:
    with pytest.raises(EngineError) as raised:
        messages([ItemReference(id="msg_1")])
    assert raised.value.code == "server_error"


# -- tools and tool choice -----------------------------------------------------------------------------


def test_function_tools_become_nested_chat_tools() -> None:
    assert build_tools([WEATHER, CLOCK]) == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city.",
                "parameters": WEATHER.parameters,
                "strict": True,
            },
        },
        {
            "type": "function",
            "function": {"name": "clock", "parameters": {"type": "object", "properties": {}}},
        },
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {}),
        ("none", {"tool_choice": "none"}),
        ("required", {"tool_choice": "required"}),
        (NamedToolChoice("clock"), {"tool_choice": {"type": "function", "function": {"name": "clock"}}}),
    ],
)
def test_tool_choice_forms(choice: ToolChoice, expected: dict[str, Any]) -> None:
    fields = tool_fields((WEATHER, CLOCK), choice, False, SETTINGS)
    assert fields.pop("tools") == build_tools([WEATHER, CLOCK])
    assert fields.pop("parallel_tool_calls") is False
    assert fields == expected


def test_named_tool_choice_as_required_sends_only_that_tool() -> None:
    fields = tool_fields(
        (WEATHER, CLOCK), NamedToolChoice("clock"), True, settings(named_tool_choice="required")
    )
    assert fields == {"tools": build_tools([CLOCK]), "tool_choice": "required", "parallel_tool_calls": True}
    with pytest.raises(EngineError):
        tool_fields((WEATHER,), NamedToolChoice("missing"), True, SETTINGS)


def test_without_tools_no_tool_field_is_sent() -> None:
    assert tool_fields((), "required", True, SETTINGS) == {}


# -- the whole body ------------------------------------------------------------------------------------


def test_body_fields() -> None:
    turn = request(
        [Message(role="user", content="hi")],
        instructions="Be brief.",
        tools=(WEATHER,),
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0.2,
        top_p=0.9,
        max_output_tokens=64,
        cache_key="owner/lane-a",
    )
    body = build_body(turn, SETTINGS)
    assert body == {
        "model": "client-model",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": build_tools([WEATHER]),
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 64,
    }
    assert build_headers(turn, SETTINGS) == {"X-Loopwire-Cache-Key": affinity_token("owner/lane-a")}
    assert msgspec.json.decode(encode_body(body)) == body

    other = build_body(
        turn,
        settings(
            model="qwen2.5:7b",
            max_tokens_field="max_completion_tokens",
            include_usage=False,
            cache_key_via=frozenset({"prompt_cache_key", "user"}),
            extra_body={"chat_template_kwargs": {"enable_thinking": False}, "model": "ignored"},
        ),
    )
    assert other["model"] == "qwen2.5:7b"
    assert other["max_completion_tokens"] == 64 and "max_tokens" not in other
    assert "stream_options" not in other
    assert other["prompt_cache_key"] == other["user"] == affinity_token("owner/lane-a")
    assert other["chat_template_kwargs"] == {"enable_thinking": False}
    minimal = build_body(request([Message(role="user", content="hi")]), SETTINGS)
    assert set(minimal) == {"model", "messages", "stream", "stream_options", "max_tokens"}
    assert minimal["max_tokens"] == DEFAULT_MAX_OUTPUT_TOKENS  # no client limit: the default cap
    uncapped = build_body(
        request([Message(role="user", content="hi")]), settings(default_max_output_tokens=0)
    )
    assert set(uncapped) == {"model", "messages", "stream", "stream_options"}


def test_cache_key_token_is_stable_opaque_and_per_key() -> None:
    token = affinity_token("key-digest/lane-1")
    assert token == affinity_token("key-digest/lane-1")
    assert token != affinity_token("key-digest/lane-2")
    assert "lane" not in token and len(token) == 32
    assert build_headers(request([], cache_key=""), SETTINGS) == {}


# -- settings ------------------------------------------------------------------------------------------


def test_settings_from_loose_options() -> None:
    built = OpenAIChatSettings.from_options(
        upstream="http://a:8000/v1, http://b:8000/v1/chat/completions/", cache_key_via="header,user"
    )
    assert built.endpoints == ("http://a:8000/v1/chat/completions", "http://b:8000/v1/chat/completions")
    assert built.cache_key_via == frozenset({"header", "user"})
    assert chat_endpoint("https://api.example.com/v1/") == "https://api.example.com/v1/chat/completions"


@pytest.mark.parametrize(
    "options",
    [
        {"upstream": ""},
        {"upstream": "ftp://a/v1"},
        {"upstream": "http://a/v1,http://a/v1/"},
        {"upstream": "http://a/v1?x=1"},
        {"upstream": "http://a/v1", "idle_timeout_s": 0},
        {"upstream": "http://a/v1", "cache_key_via": "cookie"},
        {"upstream": "http://a/v1", "reasoning": "keep"},
        {"upstream": "http://a/v1", "colour": "blue"},
    ],
)
def test_bad_settings_are_value_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        OpenAIChatSettings.from_options(**options)


# -- round trips ---------------------------------------------------------------------------------------


def _parse_fixture(name: str) -> list[Any]:
    parser = ChunkParser()
    deltas = parser.feed((FIXTURES / name).read_bytes()) + parser.close()
    return [*deltas, parser.finish(lambda: 0)]


@pytest.mark.parametrize(
    "fixture", ["vllm_tool_calls.txt", "ollama_tool_calls.txt", "llamacpp_tool_call_streamed.txt"]
)
def test_streamed_calls_come_back_as_the_same_chat_tool_calls(fixture: str) -> None:
    """Upstream chunks → deltas → Turn's output items → history → chat messages: the assistant message
    sent back is the one the upstream generated, ids, names and arguments intact."""
    deltas = _parse_fixture(fixture)
    turn = Turn(Response(id="resp_1", created_at=0, status="in_progress", model="m"), None)
    for delta in deltas[:-1]:
        turn.feed(delta)
    _, response = turn.finish(deltas[-1], 0)
    history: list[InputItem] = [Message(role="user", content="go"), *response.output]
    for item in response.output:
        assert isinstance(item, FunctionCall)
        history.append(FunctionCallOutput(call_id=item.call_id, output="ok"))
    result = messages(history)
    assistant = result[1]
    expected = _tool_calls_in(FIXTURES / fixture)
    assert assistant["role"] == "assistant" and assistant["content"] == ""
    assert [
        (call["id"], call["function"]["name"], call["function"]["arguments"])
        for call in assistant["tool_calls"]
    ] == expected
    assert [message["tool_call_id"] for message in result[2:]] == [call_id for call_id, _, _ in expected]


def _tool_calls_in(path: Path) -> list[tuple[str, str, str]]:
    """The calls in a fixture, assembled independently of the parser: a call starts at a chunk that names
    a function; argument pieces join the latest call."""
    calls: list[list[str]] = []
    for line in path.read_text().splitlines():
        if not line.startswith("data: {"):
            continue
        for choice in msgspec.json.decode(line[6:]).get("choices", []):
            for piece in (choice.get("delta") or {}).get("tool_calls") or []:
                function = piece.get("function") or {}
                if function.get("name"):
                    calls.append([piece["id"], function["name"], ""])
                calls[-1][2] += function.get("arguments") or ""
    return [(call_id, name, arguments) for call_id, name, arguments in calls]


def test_text_and_calls_round_trip_through_history() -> None:
    """Output of one turn (text then a call) renders back as one assistant message with both."""
    parser = ChunkParser(new_call_id=lambda: "call_fixed")
    chunk = {
        "choices": [
            {"index": 0, "delta": {"content": "Let me look."}},
        ]
    }
    call = {
        "choices": [
            {
                "index": 0,
                "delta": {"tool_calls": [{"index": 0, "function": {"name": "clock", "arguments": "{}"}}]},
                "finish_reason": "tool_calls",
            }
        ]
    }
    body = (
        b"".join(b"data: " + msgspec.json.encode(part) + b"\n\n" for part in (chunk, call))
        + b"data: [DONE]\n\n"
    )
    deltas = parser.feed(body)
    turn = Turn(Response(id="resp_1", created_at=0, status="in_progress", model="m"), None)
    for delta in deltas:
        turn.feed(delta)
    _, response = turn.finish(parser.finish(lambda: 0), 0)
    assert messages(list(response.output)) == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {"id": "call_fixed", "type": "function", "function": {"name": "clock", "arguments": "{}"}}
            ],
        }
    ]
