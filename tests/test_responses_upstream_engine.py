"""The responses engine in process: the event parser and body builder on their own, and the socket pool
(leases released with the render state, the bound, aclose) against a real loopwire sim upstream process.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path

import pytest
from conftest import ROOT, ServerProcess

from loopwire.core.turn import Turn
from loopwire.engines.base import (
    EngineRequest,
    Finished,
    ReasoningDelta,
    TextDelta,
    ToolArgumentsDelta,
    ToolCallStart,
    ToolSpec,
    UpstreamItem,
    Usage,
)
from loopwire.engines.factory import build_engine
from loopwire.engines.responses_upstream import (
    EventParser,
    ResponsesEngine,
    ResponsesSettings,
    UpstreamFailure,
    UpstreamRender,
)
from loopwire.engines.responses_upstream.body import build_body, encode_body
from loopwire.protocol.compaction import encode_summary
from loopwire.protocol.context import EMPTY_CONTEXT
from loopwire.protocol.events import encode, event_bytes
from loopwire.protocol.items import (
    Compaction,
    FunctionCallOutput,
    InputItem,
    Message,
    decode_item,
    sent_json,
    set_id,
)
from loopwire.protocol.response import Response


def event(kind: str, **fields: object) -> bytes:
    return json.dumps({"type": kind, "sequence_number": 0, **fields}).encode()


# -- the parser ----------------------------------------------------------------------------------------


def test_parser_follows_calls_and_fills_in_arguments_sent_only_when_done() -> None:
    parser = EventParser()
    call = {"id": "fc_1", "type": "function_call", "call_id": "call_a", "name": "read", "arguments": ""}
    deltas = parser.feed(event("response.created", response={"id": "resp_up"}))
    deltas += parser.feed(event("response.output_item.added", output_index=0, item=call))
    deltas += parser.feed(event("response.function_call_arguments.delta", item_id="fc_1", delta='{"pa'))
    deltas += parser.feed(
        event("response.function_call_arguments.done", item_id="fc_1", arguments='{"path":1}')
    )
    deltas += parser.feed(event("response.output_item.done", item={**call, "arguments": '{"path":1}'}))
    deltas += parser.feed(event("response.some_future_event", payload=[1, 2]))
    usage = {"input_tokens": 9, "output_tokens": 4, "input_tokens_details": {"cached_tokens": 3}}
    parser.feed(event("response.completed", response={"id": "resp_up", "usage": usage}))
    assert deltas == [
        ToolCallStart("call_a", "read"),
        ToolArgumentsDelta('{"pa'),
        ToolArgumentsDelta('th":1}'),
    ]
    assert parser.done and parser.response_id == "resp_up" and parser.stop_reason == "tool_calls"
    assert parser.usage is not None
    assert (parser.usage.input_tokens, parser.usage.cached_tokens, parser.usage.output_tokens) == (9, 3, 4)


def test_parser_passes_reasoning_custom_calls_and_hosted_items_on() -> None:
    """An upstream that runs hosted tools and reasons: its reasoning keeps the upstream's id and encrypted
    content, a custom tool call and a namespaced call come through as such, and a web search the upstream
    ran arrives whole, every field kept; the Turn makes SDK-shaped output of all of it."""
    parser = EventParser()
    reasoning = {"id": "rs_up", "type": "reasoning", "summary": []}
    search = {
        "id": "ws_up",
        "type": "web_search_call",
        "status": "completed",
        "action": {"type": "search", "query": "loopwire", "sources": [{"type": "url", "url": "https://x"}]},
        "future_field": 1,
    }
    custom = {
        "id": "ctc_up",
        "type": "custom_tool_call",
        "call_id": "call_c",
        "name": "apply_patch",
        "input": "",
    }
    deltas = parser.feed(event("response.output_item.added", output_index=0, item=reasoning))
    deltas += parser.feed(
        event("response.reasoning_summary_text.delta", item_id="rs_up", summary_index=0, delta="plan")
    )
    deltas += parser.feed(event("response.output_item.done", item={**reasoning, "encrypted_content": "gAAA"}))
    deltas += parser.feed(event("response.output_item.added", output_index=1, item=search))
    deltas += parser.feed(event("response.output_item.done", output_index=1, item=search))
    deltas += parser.feed(event("response.output_item.added", output_index=2, item=custom))
    deltas += parser.feed(event("response.custom_tool_call_input.delta", item_id="ctc_up", delta="*** Begin"))
    deltas += parser.feed(
        event("response.custom_tool_call_input.done", item_id="ctc_up", input="*** Begin Patch")
    )
    namespaced = {
        "id": "fc_up",
        "type": "function_call",
        "call_id": "call_n",
        "name": "lookup",
        "namespace": "crm",
    }
    deltas += parser.feed(
        event("response.output_item.added", output_index=3, item={**namespaced, "arguments": "{}"})
    )
    assert deltas == [
        ReasoningDelta("", item_id="rs_up"),
        ReasoningDelta("plan", "summary", 0, item_id="rs_up"),
        ReasoningDelta("", encrypted_content="gAAA", item_id="rs_up"),
        UpstreamItem(json.dumps(search).encode(), done=False),
        UpstreamItem(json.dumps(search).encode()),
        ToolCallStart("call_c", "apply_patch", "custom", None),
        ToolArgumentsDelta("*** Begin"),
        ToolArgumentsDelta(" Patch"),
        ToolCallStart("call_n", "lookup", "function", "crm"),
        ToolArgumentsDelta("{}"),
    ]
    turn = Turn(Response(id="resp_x", created_at=0, status="in_progress", model="m"), None)
    events = [e for delta in deltas for e in turn.feed(delta)]
    _, response = turn.finish(Finished(Usage()), 0)
    body = json.loads(encode(response))
    assert [item["type"] for item in body["output"]] == [
        "reasoning",
        "web_search_call",
        "custom_tool_call",
        "function_call",
    ]
    assert body["output"][0]["id"] == "rs_up" and body["output"][0]["encrypted_content"] == "gAAA"
    assert body["output"][0]["summary"] == [{"type": "summary_text", "text": "plan"}]
    assert body["output"][1] == search
    assert body["output"][2]["input"] == "*** Begin Patch" and body["output"][3]["namespace"] == "crm"
    encoded = [json.loads(encode(e)) for e in events]
    added = [e["item"] for e in encoded if e["type"] == "response.output_item.added"]
    assert added[1] == search


def test_a_hosted_tool_run_upstream_streams_its_progress_through() -> None:
    """A web search the upstream runs: announced when it starts, its progress events renumbered into this
    stream (sequence_number, output_index), then finished; every event validates as the SDK's type."""
    from openai.types.responses import ResponseStreamEvent
    from sdk_types import classes_by_type

    search = {"id": "ws_up", "type": "web_search_call", "status": "in_progress", "action": {"type": "search"}}
    done = {**search, "status": "completed", "action": {"type": "search", "query": "q"}}
    upstream = [
        event("response.output_text.delta", item_id="msg_up", output_index=0, content_index=0, delta="Hi"),
        event("response.output_item.added", output_index=7, item=search),
        event("response.web_search_call.in_progress", output_index=7, item_id="ws_up"),
        event("response.web_search_call.searching", output_index=7, item_id="ws_up"),
        event("response.web_search_call.completed", output_index=7, item_id="ws_up"),
        event("response.output_item.done", output_index=7, item=done),
    ]
    parser = EventParser()
    deltas = [delta for data in upstream for delta in parser.feed(data)]
    turn = Turn(Response(id="resp_x", created_at=0, status="in_progress", model="m"), "lane")
    events = [*turn.opening()] + [e for delta in deltas for e in turn.feed(delta)]
    closing, response = turn.finish(Finished(Usage()), 0)
    wire = [json.loads(event_bytes(e)) for e in [*events, *closing, turn.terminal(encode(response))]]
    kinds = [e["type"] for e in wire]
    assert kinds[kinds.index("response.output_text.done") + 3 :] == [
        "response.output_item.added",
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        "response.web_search_call.completed",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in wire] == list(range(len(wire)))
    progress = [e for e in wire if e["type"].startswith("response.web_search_call.")]
    assert {e["output_index"] for e in progress} == {1} and {e["stream_id"] for e in progress} == {"lane"}
    assert wire[-1]["response"]["output"][1] == done
    classes = classes_by_type(ResponseStreamEvent)
    for item in wire:
        classes[item["type"]].model_validate(item)


def test_parser_turns_error_events_into_failures_and_marks_a_lost_parent_for_replay() -> None:
    lost = EventParser()
    with pytest.raises(UpstreamFailure) as caught:
        error = {"code": "previous_response_not_found", "message": "gone"}
        lost.feed(event("error", status=400, error=error))
    assert caught.value.replay and lost.done
    other = EventParser()
    other.feed(event("response.output_text.delta", item_id="m", delta="hi"))
    with pytest.raises(UpstreamFailure) as caught:
        other.feed(event("response.failed", response={"id": "r", "error": {"code": "x", "message": "boom"}}))
    assert not caught.value.replay and "boom" in str(caught.value)
    sse_error = EventParser()
    with pytest.raises(UpstreamFailure, match="rate"):
        sse_error.feed(event("error", code="rate_limit_exceeded", message="slow down"))


def test_parser_refuses_interleaved_arguments_and_malformed_handled_events() -> None:
    parser = EventParser()
    for number in (1, 2):
        item = {"id": f"fc_{number}", "type": "function_call", "call_id": f"c{number}", "name": "f"}
        parser.feed(event("response.output_item.added", item=item))
    with pytest.raises(UpstreamFailure, match="interleaved"):
        parser.feed(event("response.function_call_arguments.delta", item_id="fc_1", delta="{"))
    with pytest.raises(UpstreamFailure, match="malformed"):
        EventParser().feed(event("response.output_text.delta", delta=7))
    assert EventParser().feed(event("response.audio.delta", delta=7)) == []


# -- the body ------------------------------------------------------------------------------------------


def test_body_drops_this_servers_ids_and_sends_compactions_as_text() -> None:
    settings = ResponsesSettings(upstream="http://up/v1", model="upstream-model")
    items: list[InputItem] = [
        Compaction(encrypted_content=encode_summary("we fixed the parser"), id="cmp_1"),
        Message(role="user", content="hi", id="msg_ours", status="completed"),
        FunctionCallOutput(call_id="call_1", output="ok", id="fco_ours"),
    ]
    request = EngineRequest(
        model="client-model",
        history=EMPTY_CONTEXT.extend(items),
        tools=(ToolSpec("f", None, {"type": "object"}),),
        cache_key="owner/lane",
    )
    built = build_body(request, settings, items=items, previous_id="resp_up", store=False, websocket=True)
    body = json.loads(encode_body(built))
    assert body["type"] == "response.create" and body["model"] == "upstream-model"
    assert body["previous_response_id"] == "resp_up" and body["store"] is False
    assert [item.get("id") for item in body["input"]] == [None, None, None]
    assert "we fixed the parser" in body["input"][0]["content"]
    assert body["tools"] == [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    assert "owner/lane" not in json.dumps(body)  # the cache key goes as an opaque hash


def test_body_passes_what_the_client_sent_on() -> None:
    """Every tool and the tool_choice as sent (the upstream runs hosted tools), reasoning, include, text
    and client_metadata, and items with every field the client gave (only this server's ids dropped)."""
    settings = ResponsesSettings(upstream="http://up/v1")
    tools = [
        {"type": "web_search", "external_web_access": False},
        {"type": "namespace", "name": "ns", "description": "d", "tools": [{"type": "function", "name": "f"}]},
    ]
    sent_call = b'{"type":"custom_tool_call","call_id":"c1","name":"apply_patch","input":"x","new":1}'
    call = decode_item(sent_call)
    set_id(call, "ctc_ours")
    search = decode_item(
        b'{"type":"web_search_call","id":"ws_up","status":"completed","action":{"type":"search"}}'
    )
    request = EngineRequest(
        model="m",
        history=EMPTY_CONTEXT.extend([call, search]),
        sent_tools=tuple(json.dumps(tool).encode() for tool in tools),
        sent_tool_choice={"type": "web_search"},
        reasoning={"effort": "low", "summary": "auto"},
        include=("reasoning.encrypted_content",),
        text_format={"type": "json_object"},
        client_metadata={"x-codex-turn-metadata": "{}"},
    )
    body = json.loads(
        encode_body(
            build_body(
                request, settings, items=list(request.history), previous_id=None, store=True, websocket=False
            )
        )
    )
    assert body["tools"] == tools and body["tool_choice"] == {"type": "web_search"}
    assert body["reasoning"] == {"effort": "low", "summary": "auto"}
    assert body["include"] == ["reasoning.encrypted_content"] and body["text"] == {
        "format": {"type": "json_object"}
    }
    assert body["client_metadata"] == {"x-codex-turn-metadata": "{}"}
    assert body["input"][0] == {
        "type": "custom_tool_call",
        "call_id": "c1",
        "name": "apply_patch",
        "input": "x",
        "new": 1,
    }
    assert body["input"][1] == json.loads(bytes(sent_json(search) or b""))


def test_settings_and_factory() -> None:
    settings = ResponsesSettings(upstream="https://api.example.com/v1/")
    assert settings.http_endpoint == "https://api.example.com/v1/responses"
    assert settings.ws_endpoint == "wss://api.example.com/v1/responses"
    with pytest.raises(ValueError, match="transport"):
        build_engine("responses", upstream="http://up/v1", transport="carrier-pigeon")
    with pytest.raises(ValueError, match="unknown responses option"):
        build_engine("responses", upstream="http://up/v1", replicas="2")
    with pytest.raises(ValueError, match="needs an upstream"):
        build_engine("responses")


def test_cli_refuses_a_responses_engine_without_upstream() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loopwire", "serve", "--engine", "responses", "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 2 and b"needs an upstream URL" in done.stderr


# -- the socket pool, against a real upstream ------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory: Path = tmp_path_factory.mktemp("responses-engine")
    proc = ServerProcess(f"sqlite:{directory / 'db'}", directory / "up.log")
    proc.start()
    yield proc
    proc.stop()


async def run(engine: ResponsesEngine, request: EngineRequest) -> tuple[str, Finished]:
    text = ""
    async with aclosing(engine.stream(request)) as batches:  # as the runner does
        async for batch in batches:
            for delta in batch:
                if isinstance(delta, TextDelta):
                    text += delta.text
                elif isinstance(delta, Finished):
                    return text, delta
    raise AssertionError("no Finished")


def continuation(previous: EngineRequest, finished: Finished, text: str, new: str) -> EngineRequest:
    history = previous.history.extend([Message(role="assistant", content=text)])
    return EngineRequest(
        model="sim",
        history=history.extend([Message(role="user", content=new)]),
        prefix=finished.render,
        prefix_items=history.length,
    )


async def test_sockets_follow_their_chain_return_to_the_idle_set_and_stay_bounded(
    sim_upstream: ServerProcess,
) -> None:
    engine = ResponsesEngine(
        ResponsesSettings(upstream=sim_upstream.base_url, transport="ws", max_sockets=2, idle_sockets=1)
    )
    try:
        first = EngineRequest(model="sim", history=EMPTY_CONTEXT.extend([Message(role="user", content="a")]))
        text, finished = await run(engine, first)
        render = finished.render
        assert isinstance(render, UpstreamRender) and render.lease is not None
        socket = render.lease.socket
        second = continuation(first, finished, text, "b")
        text2, finished2 = await run(engine, second)
        assert isinstance(finished2.render, UpstreamRender)
        assert finished2.render.lease is render.lease  # the chain stays on its socket
        assert engine.stats.continuations == 1 and engine.pool.opened == 1

        other = EngineRequest(model="sim", history=EMPTY_CONTEXT.extend([Message(role="user", content="c")]))
        _, other_finished = await run(engine, other)  # a second chain: a second socket
        assert engine.pool.opened == 2 and len(engine.pool) == 2
        third = EngineRequest(model="sim", history=EMPTY_CONTEXT.extend([Message(role="user", content="d")]))
        _, third_finished = await run(engine, third)  # at the bound: the least recently used socket goes
        assert len(engine.pool) == 2 and engine.pool.opened == 3
        await asyncio.sleep(0.05)
        assert not socket.open

        # the first chain's socket is gone; its next turn goes on a new one, continuing from the store
        _, finished3 = await run(engine, continuation(second, finished2, text2, "e"))
        assert engine.stats.continuations == 2 and engine.pool.opened == 4

        # the render states go (the client connection closed): their sockets return to the idle set
        del render, finished, finished2, finished3, other_finished
        gc.collect()
        await asyncio.sleep(0.05)
        assert engine.pool.idle == 1  # the latest socket of chain 1; chain 2's was closed at the bound
        _, kept = await run(engine, EngineRequest(model="sim", history=third.history))
        assert engine.pool.opened == 4  # a new chain took the idle socket
        sockets = (
            [kept.render.lease.socket]
            if isinstance(kept.render, UpstreamRender) and kept.render.lease
            else []
        )
        assert sockets and sockets[0].open
        del third_finished
    finally:
        await engine.aclose()
    assert not sockets[0].open and len(engine.pool) == 0
