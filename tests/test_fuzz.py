"""Property-based fuzzing of a live server over HTTP and WebSocket mode: random and malformed create
bodies and frames. The server stays up, never answers 5xx to bad input, every error has the documented
shape, every create gets exactly one terminal event or one error, and the socket stays usable.

The default test run tries a few hundred cases; `make fuzz` sets LOOPWIRE_FUZZ_EXAMPLES (10,000+).
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import API_KEY, ServerProcess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("LOOPWIRE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("LOOPWIRE_FUZZ_RANDOM") is None,
)
TERMINAL = {"response.completed", "response.failed", "response.incomplete"}
ERROR_KEYS = {"message", "type", "param", "code"}

leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
any_json = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
part = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["input_text", "output_text", "bogus"]), "text": st.text(max_size=20)}
    ),
    st.fixed_dictionaries({"type": st.just("input_image"), "image_url": st.text(max_size=20)}),
    any_json,
)
call_id = st.sampled_from(["call_1", "call_2", ""]) | st.text(max_size=10)
item = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "developer", "assistant", "tool", "bogus"])},
        optional={
            "type": st.just("message"),
            "content": st.text(max_size=40) | st.lists(part, max_size=3),
            "phase": st.text(max_size=8),
            "id": st.text(max_size=8),
        },
    ),
    st.fixed_dictionaries(
        {"type": st.just("function_call"), "call_id": call_id, "name": st.text(max_size=8)},
        optional={"arguments": st.text(max_size=20) | any_json},
    ),
    st.fixed_dictionaries(
        {"type": st.just("function_call_output"), "call_id": call_id},
        optional={"output": st.text(max_size=20) | st.lists(part, max_size=2)},
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["item_reference", "reasoning", "compaction", "x"])},
        optional={"id": st.text(max_size=8), "encrypted_content": st.text(max_size=8)},
    ),
    any_json,
)
tool = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("function"), "name": st.text(min_size=1, max_size=8)},
        optional={
            "parameters": st.just({"type": "object", "properties": {"a": {"type": "string"}}}) | any_json,
            "description": st.text(max_size=10),
            "strict": st.booleans(),
        },
    ),
    any_json,
)
fields = {
    "model": st.just("sim") | any_json,
    "input": st.text(max_size=40) | st.lists(item, max_size=4) | any_json,
    "instructions": st.text(max_size=30) | any_json,
    "tools": st.lists(tool, max_size=3) | any_json,
    "tool_choice": st.sampled_from(["auto", "none", "required"])
    | st.fixed_dictionaries({"type": st.just("function"), "name": st.text(max_size=6)})
    | any_json,
    "previous_response_id": st.none() | st.text(max_size=30) | any_json,
    "store": st.booleans() | any_json,
    "temperature": st.floats(-3, 3) | any_json,
    "top_p": st.floats(-1, 2) | any_json,
    "max_output_tokens": st.integers(-3, 40) | any_json,
    "metadata": st.dictionaries(st.text(max_size=70), st.text(max_size=10), max_size=18) | any_json,
    "background": st.booleans(),
    "parallel_tool_calls": st.booleans() | any_json,
    "truncation": st.sampled_from(["auto", "disabled", "bogus"]),
    "unknown_field": any_json,
}
without_model = {name: strategy for name, strategy in fields.items() if name != "model"}
body = st.fixed_dictionaries({"model": st.just("sim")}, optional=without_model) | st.fixed_dictionaries(
    {}, optional=fields
)
ws_fields = {
    "stream_id": st.sampled_from(["lane-a", "lane.b", "", "bad id!", "x" * 300]) | any_json,
    "generate": st.booleans() | any_json,
    "stream": st.booleans(),
}
frame_object = st.one_of(
    st.builds(
        lambda b, extra: {"type": "response.create", **b, **extra},
        body,
        st.fixed_dictionaries({}, optional=ws_fields),
    ),
    st.builds(
        lambda t, b: {"type": t, **b}, st.sampled_from(["response.processed", "response.cancel", "x"]), body
    ),
    any_json,
)
malformed = st.sampled_from(
    [b"{", b"", b"[1,2", b'{"type": "response.create",}', b"\xff\xfe", b"null"]
) | st.binary(max_size=40)


def assert_error_shape(error: Any) -> None:
    assert isinstance(error, dict) and set(error) >= ERROR_KEYS, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("fuzz")
    server = ServerProcess("memory", tmp / "server.log").start()
    yield server
    assert server.alive(), server.log_text()
    assert "Traceback" not in server.log_text(), server.log_text()
    server.stop()


class Http:
    def __init__(self, server: ServerProcess) -> None:
        self.port = server.port
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)

    def post(self, payload: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
        try:
            self.conn.request("POST", "/v1/responses", body=payload, headers=headers)
            reply = self.conn.getresponse()
            return reply.status, reply.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
            raise


def check_http_answer(status: int, data: bytes, streamed: bool) -> None:
    assert status < 500, (status, data)
    if status != 200:
        assert_error_shape(json.loads(data)["error"])
        return
    if streamed:
        events = [json.loads(line[6:]) for line in data.split(b"\n") if line.startswith(b"data: ")]
        assert events and events[0]["type"] == "response.created"
        assert [event["type"] in TERMINAL for event in events].count(True) == 1
        assert events[-1]["type"] in TERMINAL
        assert [event["sequence_number"] for event in events] == list(range(len(events)))
    else:
        response = json.loads(data)
        assert response["object"] == "response"
        assert response["status"] in {"completed", "failed", "incomplete"}


@FUZZ
@given(payload=body, stream=st.booleans())
def test_http_create_survives_any_body(
    fuzz_server: ServerProcess, payload: dict[str, Any], stream: bool
) -> None:
    client = Http(fuzz_server)
    status, data = client.post(json.dumps({**payload, "stream": stream}).encode())
    check_http_answer(status, data, stream and status == 200)
    status, data = client.post(b'{"model": "sim", "input": "still alive?"}')
    assert status == 200


@FUZZ
@given(payload=malformed)
def test_http_create_survives_malformed_bytes(fuzz_server: ServerProcess, payload: bytes) -> None:
    status, data = Http(fuzz_server).post(payload)
    assert status == 400, (status, data)
    assert_error_shape(json.loads(data)["error"])


def ws_url(server: ServerProcess) -> str:
    return f"ws://127.0.0.1:{server.port}/v1/responses"


def outcome_of(socket: ClientConnection, sent: Any) -> str:
    """Read until the frame's one outcome: a terminal event or an error event; none for ignored events."""
    quiet = isinstance(sent, dict) and sent.get("type") == "response.processed"
    seen_terminal = 0
    while True:
        try:
            event = json.loads(socket.recv(timeout=0.5 if quiet else 10))
        except TimeoutError:
            assert quiet, f"no outcome for {sent!r}"
            return "ignored"
        if event["type"] == "error":
            assert_error_shape(event["error"])
            assert isinstance(event.get("status"), int) and event["status"] < 500, event
            return "error"
        assert "error" not in event or event["type"].startswith("response."), event
        if event["type"] in TERMINAL:
            seen_terminal += 1
            return event["type"]


def probe(socket: ClientConnection) -> None:
    socket.send(
        json.dumps(
            {
                "type": "response.create",
                "model": "sim",
                "input": "probe",
                "store": False,
                "stream_id": "probe",
            }
        )
    )
    assert outcome_of(socket, {}) == "response.completed"


@FUZZ
@given(frames=st.lists(frame_object | malformed, min_size=1, max_size=4))
def test_websocket_survives_any_frames(fuzz_server: ServerProcess, frames: list[Any]) -> None:
    with connect(ws_url(fuzz_server), additional_headers={"Authorization": f"Bearer {API_KEY}"}) as socket:
        for frame in frames:
            if isinstance(frame, bytes):
                socket.send(frame.decode("utf-8", errors="replace"))
            else:
                socket.send(json.dumps(frame))
            outcome_of(socket, frame)
        probe(socket)
