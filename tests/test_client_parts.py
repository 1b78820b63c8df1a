"""The client's small pure parts: SSE framing, request bytes, event sniffing, backoff, fallback counting."""

from __future__ import annotations

import random

import msgspec
import pytest

from loopwire.client import Backoff, RequestError, SessionOptions, SocketHealth, websocket_url
from loopwire.client.delta import InputPlan
from loopwire.client.events import event_type, is_first_token, is_output, response_id_of
from loopwire.client.request import canonical_fields, http_body, ws_frame

EVENTS = [
    b'{"type":"response.created","sequence_number":0,"response":{"id":"resp_1"}}',
    b'{"type":"response.output_text.delta","sequence_number":1,"delta":"a\\nb"}',
    b'{"type":"response.completed","sequence_number":2,"response":{"id":"resp_1"}}',
]


def test_request_bytes_put_fields_input_and_id_in_one_object() -> None:
    fields = canonical_fields({"model": "sim", "tools": [], "store": False})
    plan = InputPlan([{"type": "message", "role": "user", "content": "hi"}], "resp_9")
    frame = ws_frame(fields, plan, "lane-1")
    assert frame.startswith(b'{"type":"response.create",')
    assert msgspec.json.decode(frame) == {
        "type": "response.create",
        "model": "sim",
        "tools": [],
        "store": False,
        "input": plan.input,
        "previous_response_id": "resp_9",
        "stream_id": "lane-1",
    }
    body = msgspec.json.decode(http_body(fields, InputPlan(plan.input, None)))
    assert body == {"stream": True, "model": "sim", "tools": [], "store": False, "input": plan.input}
    assert msgspec.json.decode(ws_frame(b"{}", plan)) == {
        "type": "response.create",
        "input": plan.input,
        "previous_response_id": "resp_9",
    }


def test_event_sniffing_reads_type_and_id_without_decoding_and_falls_back() -> None:
    assert [event_type(e) for e in EVENTS] == [
        "response.created",
        "response.output_text.delta",
        "response.completed",
    ]
    assert event_type(b'{"sequence_number":0,"type":"error"}') == "error"
    assert response_id_of(EVENTS[0]) == "resp_1"
    assert response_id_of(b'{"type":"response.output_text.delta","previous_response_id":"resp_0"}') is None
    assert not is_output("response.created") and not is_output("response.in_progress")
    assert is_output("response.output_item.added") and is_output("response.function_call_arguments.delta")
    assert not is_output("response.completed") and not is_output("loopwire.client.resend")
    assert is_first_token("response.output_text.delta") and not is_first_token("response.output_text.done")


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    backoff = Backoff(base_s=0.1, factor=2.0, max_s=0.5)
    rng = random.Random(7)
    assert backoff.delay(0, rng) == 0.0
    for failures, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)]:
        delays = [backoff.delay(failures, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not fixed


def test_socket_health_falls_back_at_the_threshold_and_retries_after_the_cooldown() -> None:
    health = SocketHealth(max_failures=3, cooldown_s=10.0)
    assert not health.failure(0.0) and not health.failure(1.0)
    assert health.socket_allowed(1.0)
    assert health.failure(2.0)  # third consecutive failure: fall back
    assert not health.socket_allowed(11.9) and health.socket_allowed(12.0)
    assert health.failure(12.5)  # the probe after the cool-down failed: straight back to HTTP
    assert not health.socket_allowed(22.0) and health.socket_allowed(22.5)
    health.success()
    assert health.failures == 0 and not health.failure(30.0)


def test_a_426_falls_back_at_once() -> None:
    health = SocketHealth(max_failures=3, cooldown_s=5.0)
    health.refused(1.0)
    assert not health.socket_allowed(5.9) and health.socket_allowed(6.0)


def test_websocket_url_follows_the_sdk() -> None:
    assert websocket_url("http://127.0.0.1:8000/v1") == "ws://127.0.0.1:8000/v1/responses"
    assert websocket_url("https://api.example.com/v1/") == "wss://api.example.com/v1/responses"


def test_request_error_reads_both_wire_shapes() -> None:
    body = b'{"error":{"message":"gone","type":"invalid_request_error","code":"previous_response_not_found"}}'
    error = RequestError.from_http(400, body)
    assert (error.status, error.code, error.message) == (400, "previous_response_not_found", "gone")
    event = {"type": "error", "status": 400, "error": {"code": "invalid_stream_id", "message": "bad"}}
    assert RequestError.from_event(event).code == "invalid_stream_id"
    assert RequestError.from_http(502, b"<html>bad gateway</html>").message == "<html>bad gateway</html>"


@pytest.mark.parametrize(
    "bad",
    [{"rotate_after_s": 0}, {"max_socket_failures": 0}, {"http_retries": -1}, {"read_timeout_s": 0.0}],
)
def test_options_refuse_impossible_values(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SessionOptions(**bad)  # type: ignore[arg-type]
