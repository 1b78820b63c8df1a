"""The sans-I/O chunk parser on the recorded shapes of vLLM, llama.cpp and Ollama (fixtures/chat_chunks):
text, tool calls in every arrival pattern, stop reasons, usage (reported, llama.cpp timings, estimated),
in-stream errors, cut streams, SSE framing and read boundaries."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import msgspec
import pytest

from loopwire.engines.base import (
    EngineDelta,
    EngineError,
    Finished,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallStart,
    Usage,
)
from loopwire.engines.openai_chat.chunks import ChunkParser
from loopwire.protocol.sse import SseDecoder, SseEvent

FIXTURES = Path(__file__).parent / "fixtures" / "chat_chunks"
ESTIMATE = 999  # what the input estimate returns in these tests: visible wherever it is used


@dataclass
class Parsed:
    text: str
    calls: list[tuple[str, str, str]]  # (call_id, name, arguments)
    finished: Finished
    deltas: list[EngineDelta]
    estimated: bool


def ids() -> Any:
    numbers = count(1)
    return lambda: f"call_gen{next(numbers)}"


def parse(body: bytes, *, byte_by_byte: bool = False) -> Parsed:
    parser = ChunkParser(new_call_id=ids())
    deltas: list[EngineDelta] = []
    if byte_by_byte:
        for index in range(len(body)):
            deltas += parser.feed(body[index : index + 1])
    else:
        deltas += parser.feed(body)
    deltas += parser.close()
    finished = parser.finish(lambda: ESTIMATE)
    return Parsed(*assemble(deltas), finished, deltas, parser.usage_estimated)


def assemble(deltas: list[EngineDelta]) -> tuple[str, list[tuple[str, str, str]]]:
    text: list[str] = []
    calls: list[list[str]] = []
    for delta in deltas:
        if isinstance(delta, TextDelta):
            text.append(delta.text)
        elif isinstance(delta, ToolCallStart):
            calls.append([delta.call_id, delta.name, ""])
        elif isinstance(delta, ToolArgumentsDelta):
            assert calls, "arguments before any call started"
            calls[-1][2] += delta.delta
    return "".join(text), [(a, b, c) for a, b, c in calls]


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.txt").read_bytes()


def sse(*chunks: dict[str, Any] | str) -> bytes:
    lines = [
        b"data: " + (chunk.encode() if isinstance(chunk, str) else msgspec.json.encode(chunk)) + b"\n\n"
        for chunk in chunks
    ]
    return b"".join(lines)


def delta_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def calls(*pieces: dict[str, Any]) -> dict[str, Any]:
    return delta_chunk({"tool_calls": list(pieces)})


# -- the recorded servers ------------------------------------------------------------------------------

EXPECTED: dict[str, tuple[str, list[tuple[str, str, str]], str, Usage, bool]] = {
    "vllm_text": ("The sky is blue.", [], "stop", Usage(31, 16, 6), False),
    "vllm_tool_calls": (
        "",
        [
            ("chatcmpl-tool-6c1d0f6ea0a54d2a9a1f3a2e8f0b7c41", "get_weather", '{"city": "Paris", "days": 3}'),
            ("chatcmpl-tool-0e5b8d2c7f1a4b3d9c6e4a2f8b1d7c95", "get_weather", '{"city": "Oslo", "days": 1}'),
        ],
        "tool_calls",
        Usage(412, 0, 54),
        False,
    ),
    "vllm_tool_call_repeated_id": (
        "",
        [("chatcmpl-tool-9f3a6c2e8b1d4f7a0c5e3b9d1f6a2c84", "get_weather", '{"city": "Paris", "days": 2}')],
        "tool_calls",
        Usage(250, 0, 22),
        False,
    ),
    "vllm_reasoning": ("Hello!", [], "stop", Usage(12, 0, 8, reasoning_tokens=5), False),
    "llamacpp_text": ("Hello there!", [], "stop", Usage(42, 30, 4), False),
    "llamacpp_tool_call": (
        "",
        [("Xq7bT2mZk9R4vL1pN8sD3fH6jW0cY5aE", "get_weather", '{"city":"Paris","days":3}')],
        "tool_calls",
        Usage(96 + 310, 96, 21),  # from llama.cpp's timings: no usage chunk
        False,
    ),
    "llamacpp_tool_call_streamed": (
        "",
        [("v2dhK8pQ3sN6wR1tY9uB4zC7xM0aE5fL", "run_command", '{"command":"pwd"}')],
        "tool_calls",
        Usage(519, 0, 18),
        False,
    ),
    "ollama_text": ("My name is Qwen.", [], "stop", Usage(26, 0, 5), False),
    "ollama_tool_calls": (
        "",
        [
            ("call_wteop8bt", "run_command", '{"command":"ls"}'),
            ("call_rk2xye1l", "run_command", '{"command":"ls -l"}'),
        ],
        "tool_calls",
        Usage(180, 0, 38),
        False,
    ),
    "ollama_legacy_tool_call": (
        "",
        [("call_ejieksiz", "function_1", '{"a":10,"b":11}')],
        "tool_calls",  # it said "stop" after a tool call
        Usage(ESTIMATE, 0, 4),  # no usage at all: one output chunk of 15 argument bytes
        True,
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["one-read", "byte-by-byte"])
def test_recorded_streams(name: str, byte_by_byte: bool) -> None:
    text, expected_calls, stop, usage, estimated = EXPECTED[name]
    parsed = parse(fixture(name), byte_by_byte=byte_by_byte)
    assert parsed.text == text
    assert parsed.calls == expected_calls
    assert parsed.finished.stop_reason == stop
    assert parsed.finished.usage == usage
    assert parsed.finished.render is None
    assert parsed.estimated is estimated
    for delta in parsed.deltas:  # no empty deltas reach the session
        assert not isinstance(delta, TextDelta) or delta.text
        assert not isinstance(delta, ToolArgumentsDelta) or delta.delta


@pytest.mark.parametrize("name", ["vllm_text", "llamacpp_tool_call_streamed", "ollama_tool_calls"])
def test_crlf_line_ends_split_anywhere_read_the_same(name: str) -> None:
    body = fixture(name)
    crlf = body.replace(b"\n", b"\r\n")
    reference = parse(body)
    for step in (1, 2, 7):  # reads that split "\r" from "\n"
        parser = ChunkParser(new_call_id=ids())
        deltas: list[EngineDelta] = []
        for start in range(0, len(crlf), step):
            deltas += parser.feed(crlf[start : start + step])
        deltas += parser.close()
        assert assemble(deltas) == (reference.text, reference.calls)
        assert parser.finish(lambda: ESTIMATE).usage == reference.finished.usage


def test_one_read_with_many_events_is_one_batch_ending_at_done() -> None:
    parser = ChunkParser()
    batch = parser.feed(fixture("vllm_text"))
    assert [delta.text for delta in batch if isinstance(delta, TextDelta)] == [
        "The",
        " sky",
        " is",
        " blue",
        ".",
    ]
    assert parser.done and parser.complete
    assert parser.feed(sse(delta_chunk({"content": "after done"}))) == []  # nothing counts after [DONE]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("vllm_error", "longer than the maximum model length"),
        ("llamacpp_error", "Context size has been exceeded."),
        ("llamacpp_error_legacy", "slot unavailable"),
    ],
)
def test_errors_inside_a_stream(name: str, message: str) -> None:
    parser = ChunkParser()
    with pytest.raises(EngineError) as raised:
        parser.feed(fixture(name))
    assert raised.value.code == "upstream_error"
    assert message in str(raised.value)


def test_the_flat_older_vllm_error_shape() -> None:
    body = sse(
        {"object": "error", "message": "model overloaded", "type": "ServiceUnavailableError", "code": 503}
    )
    with pytest.raises(EngineError, match="model overloaded"):
        ChunkParser().feed(body)


@pytest.mark.parametrize("reason", ["abort", "error"])
def test_failed_finish_reasons_are_errors(reason: str) -> None:
    with pytest.raises(EngineError, match=reason):
        ChunkParser().feed(sse(delta_chunk({"content": "par"}), delta_chunk({}, reason)))


def test_a_cut_stream_is_an_error_not_a_short_answer() -> None:
    parser = ChunkParser()
    parser.feed(sse(delta_chunk({"content": "Once upon"})))
    parser.close()
    assert not parser.complete
    with pytest.raises(EngineError, match="closed the stream"):
        parser.finish(lambda: 0)


def test_a_finish_reason_without_done_is_complete() -> None:
    parser = ChunkParser()
    parser.feed(sse(delta_chunk({"content": "ok"}, "length")))
    parser.close()
    finished = parser.finish(lambda: 7)
    assert finished.stop_reason == "length"
    assert finished.usage.input_tokens == 7


def test_malformed_chunks_are_errors() -> None:
    with pytest.raises(EngineError, match="not a chat completion chunk"):
        ChunkParser().feed(b"data: {not json\n\n")
    with pytest.raises(EngineError, match="not a chat completion chunk"):
        ChunkParser().feed(sse({"choices": "nope"}))


# -- tool-call arrival patterns ------------------------------------------------------------------------


def test_missing_and_empty_ids_are_generated() -> None:
    parsed = parse(
        sse(
            calls({"index": 0, "function": {"name": "a", "arguments": "{}"}}),
            calls({"index": 1, "id": "", "function": {"name": "b", "arguments": "{}"}}),
            "[DONE]",
        )
    )
    assert parsed.calls == [("call_gen1", "a", "{}"), ("call_gen2", "b", "{}")]


def test_a_name_that_arrives_after_the_arguments_began() -> None:
    parsed = parse(
        sse(
            calls({"index": 0, "id": "call_x", "function": {"arguments": '{"q":'}}),
            calls({"index": 0, "function": {"name": "search", "arguments": ' "cats"'}}),
            calls({"index": 0, "function": {"arguments": "}"}}),
            "[DONE]",
        )
    )
    assert parsed.calls == [("call_x", "search", '{"q": "cats"}')]
    assert isinstance(parsed.deltas[0], ToolCallStart)


def test_the_name_repeated_on_every_chunk_is_not_a_new_call() -> None:
    piece = {"index": 0, "id": "call_x", "type": "function"}
    parsed = parse(
        sse(
            calls({**piece, "function": {"name": "search", "arguments": '{"q":'}}),
            calls({**piece, "function": {"name": "search", "arguments": '"x"}'}}),
            "[DONE]",
        )
    )
    assert parsed.calls == [("call_x", "search", '{"q":"x"}')]


def test_a_new_id_mid_arguments_stays_the_same_call() -> None:
    """Builds that mint a new id per chunk (vLLM's early harmony streaming) keep one call while its
    arguments are still incomplete JSON."""
    parsed = parse(
        sse(
            calls({"index": 0, "id": "call_1", "function": {"name": "f", "arguments": '{"a":'}}),
            calls({"index": 0, "id": "call_2", "function": {"name": "f", "arguments": " 1}"}}),
            "[DONE]",
        )
    )
    assert parsed.calls == [("call_1", "f", '{"a": 1}')]


def test_calls_without_any_index_are_told_apart_by_id() -> None:
    parsed = parse(
        sse(
            calls({"id": "call_1", "function": {"name": "f", "arguments": '{"n":1}'}}),
            calls({"id": "call_2", "function": {"name": "f", "arguments": '{"n":2}'}}),
            "[DONE]",
        )
    )
    assert parsed.calls == [("call_1", "f", '{"n":1}'), ("call_2", "f", '{"n":2}')]


def test_arguments_as_an_object_are_encoded() -> None:
    parsed = parse(
        sse(calls({"index": 0, "id": "c", "function": {"name": "f", "arguments": {"x": [1, 2]}}}), "[DONE]")
    )
    assert parsed.calls == [("c", "f", '{"x":[1,2]}')]


def test_text_then_calls_then_text() -> None:
    parsed = parse(
        sse(
            delta_chunk({"content": "Let me check."}),
            calls({"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}}),
            delta_chunk({"content": " Done."}, "tool_calls"),
            "[DONE]",
        )
    )
    kinds = [type(delta).__name__ for delta in parsed.deltas]
    assert kinds == ["TextDelta", "ToolCallStart", "ToolArgumentsDelta", "TextDelta"]
    assert parsed.finished.stop_reason == "tool_calls"


def test_more_of_a_call_after_text_is_refused_and_a_new_call_after_text_is_fine() -> None:
    with pytest.raises(EngineError, match="after it had ended"):
        ChunkParser().feed(
            sse(
                calls({"index": 0, "id": "a", "function": {"name": "f", "arguments": "{"}}),
                delta_chunk({"content": "hmm"}),
                calls({"index": 0, "function": {"arguments": "}"}}),
            )
        )
    parsed = parse(
        sse(
            calls({"index": 0, "id": "a", "function": {"name": "f", "arguments": "{}"}}),
            delta_chunk({"content": "and also"}),
            calls({"index": 0, "id": "b", "function": {"name": "g", "arguments": "{}"}}),
            "[DONE]",
        )
    )
    assert parsed.calls == [("a", "f", "{}"), ("b", "g", "{}")]
    assert parsed.text == "and also"


def test_interleaved_calls_are_refused() -> None:
    with pytest.raises(EngineError, match="after it had ended"):
        ChunkParser().feed(
            sse(
                calls({"index": 0, "id": "a", "function": {"name": "f", "arguments": "{"}}),
                calls({"index": 1, "id": "b", "function": {"name": "g", "arguments": "{"}}),
                calls({"index": 0, "function": {"arguments": "}"}}),
            )
        )


def test_a_call_that_never_gets_a_name_is_an_error() -> None:
    parser = ChunkParser()
    parser.feed(sse(calls({"index": 0, "id": "a", "function": {"arguments": "{}"}}), "[DONE]"))
    with pytest.raises(EngineError, match="without a function name"):
        parser.finish(lambda: 0)


def test_other_choices_are_ignored() -> None:
    body = sse(
        {
            "choices": [
                {"index": 1, "delta": {"content": "second choice"}},
                {"index": 0, "delta": {"content": "mine"}},
            ]
        },
        "[DONE]",
    )
    assert parse(body).text == "mine"


def test_refusals_and_content_parts_are_text() -> None:
    body = sse(
        delta_chunk({"refusal": "No."}),
        delta_chunk({"content": [{"type": "text", "text": " Sorry"}, {"type": "thinking", "thinking": "x"}]}),
        "[DONE]",
    )
    assert parse(body).text == "No. Sorry"


# -- usage ---------------------------------------------------------------------------------------------


def test_continuous_usage_keeps_the_last_report() -> None:
    body = sse(
        {**delta_chunk({"content": "a"}), "usage": {"prompt_tokens": 10, "completion_tokens": 1}},
        {**delta_chunk({"content": "b"}, "stop"), "usage": {"prompt_tokens": 10, "completion_tokens": 2}},
        "[DONE]",
    )
    assert parse(body).finished.usage == Usage(10, 0, 2)


def test_missing_usage_is_estimated_from_what_was_streamed() -> None:
    body = sse(
        *(delta_chunk({"content": word}) for word in ["one", " two", " three"]),
        delta_chunk({}, "stop"),
        "[DONE]",
    )
    parsed = parse(body)
    assert parsed.estimated
    assert parsed.finished.usage == Usage(input_tokens=ESTIMATE, output_tokens=4)  # 13 bytes > 3 chunks


def test_usage_of_null_fields_falls_back_per_field() -> None:
    body = sse(
        delta_chunk({"content": "x" * 40}, "stop"), {"choices": [], "usage": {"prompt_tokens": 5}}, "[DONE]"
    )
    parsed = parse(body)
    assert parsed.finished.usage == Usage(5, 0, 10)
    assert parsed.estimated


def test_cached_tokens_never_exceed_input() -> None:
    body = sse(
        delta_chunk({"content": "x"}, "stop"),
        {
            "choices": [],
            "usage": {
                "prompt_tokens": 5,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 9},
            },
        },
        "[DONE]",
    )
    assert parse(body).finished.usage == Usage(5, 5, 1)


# -- a server that did not stream ----------------------------------------------------------------------


def test_a_whole_json_completion() -> None:
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Calling both.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{broken"},
                        },
                        {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29},
    }
    parser = ChunkParser()
    deltas = parser.feed_completion(msgspec.json.encode(completion))
    assert assemble(deltas) == ("Calling both.", [("call_1", "f", "{broken"), ("call_2", "g", "{}")])
    finished = parser.finish(lambda: 0)
    assert (finished.stop_reason, finished.usage) == ("tool_calls", Usage(20, 0, 9))


# -- SSE framing ---------------------------------------------------------------------------------------


def test_sse_comments_fields_and_multiline_data() -> None:
    decoder = SseDecoder()
    events = decoder.feed(
        b': ping\n\nevent: message\ndata: {"a":\ndata: 1}\nid: 7\nretry: 10\n\ndata:[DONE]\n'
    )
    assert events == [SseEvent("message", b'{"a":\n1}')]
    assert decoder.close() == [SseEvent("message", b"[DONE]")]


def test_sse_keeps_a_partial_line_until_it_ends() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b'data: {"a"') == []
    assert decoder.feed(b": 1}\n") == []
    assert decoder.feed(b"\n") == [SseEvent("message", b'{"a": 1}')]
