"""Named, configurable limits with safe defaults, shared by both transports.

Owns the numbers only; the code that enforces each one lives where the rule applies.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol.compaction import MAX_PAYLOAD_CHARS, MAX_SUMMARY_BYTES

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    max_in_flight: int = 16
    """Responses running at once on one connection; more are queued, not rejected."""
    max_named_lanes: int = 32
    """Distinct `stream_id` lanes per connection (`websocket_stream_limit_reached` past it)."""
    max_queued: int = 256
    """Creates waiting on one connection before new ones are refused with 429."""
    max_queued_bytes: int = 64 * MIB
    """Frame bytes of the creates waiting on one connection (not yet started) before new ones are refused
    with 429: without it, 256 queued frames of 16 MiB would park 4 GiB. At least `max_message_bytes`."""
    max_connection_age_s: float = 3600.0
    """A WebSocket older than this gets `websocket_connection_limit_reached` and is closed."""
    send_deadline_s: float = 30.0
    """A WebSocket client that reads nothing for this long while the server has events for it is closed."""
    max_message_bytes: int = 16 * MIB
    """Largest HTTP body or WebSocket frame accepted (413 / close 1009 past it)."""
    turn_timeout_s: float = 600.0
    """A turn still running after this long fails with `engine_timeout` (and evicts its parent)."""
    engine_idle_timeout_s: float = 120.0
    """Longest silence from the engine between two batches of deltas before the turn fails."""
    rate_limit_per_s: float = 0.0
    """Creates per second per API key (token bucket; 0 = unlimited). Past it: 429 with Retry-After."""
    rate_limit_burst: int = 20
    """Creates a key may make at once before the rate applies."""
    max_connections_per_key: int = 256
    """Open WebSocket connections per API key; past it the upgrade gets 429."""
    idle_timeout_s: float = 900.0
    """A WebSocket with no frame and no running turn for this long is closed (clients reconnect)."""
    cache_budget_bytes: int = 1024 * MIB
    """Approximate text held by all connection caches together; past it, least recently used idle lanes
    are evicted (their continuations then resolve from the store or get previous_response_not_found)."""
    max_input_items: int = 20_000
    """Items in one request's `input`."""
    max_tools: int = 128
    """Function tools in one request (as the hosted API)."""
    max_json_depth: int = 64
    """Nesting of the free-form JSON values a request carries and the server keeps or echoes (`reasoning`,
    `text`, `tool_choice`, tool `parameters`, reasoning items' `summary`/`content`, output annotations).
    Anything nested deeper than the decoder goes (~1,000 levels, anywhere in the body) is refused too."""
    max_stream_id_length: int = 256
    max_metadata_pairs: int = 16
    max_metadata_key_length: int = 64
    max_metadata_value_length: int = 512
    max_compaction_payload_chars: int = MAX_PAYLOAD_CHARS
    """Longest `encrypted_content` of a loopwire compaction item read back (400 past it)."""
    max_compaction_summary_bytes: int = MAX_SUMMARY_BYTES
    """Most bytes a compaction payload may inflate to (400 past it; never inflated further)."""
