"""The options of the openai-chat engine: upstream replicas, auth, timeouts and translation choices.

Owns option names, defaults and their validation; must not open connections or translate anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..common.options import refuse_unknown, upstream_endpoint

CacheKeyVia = Literal["prompt_cache_key", "user", "header"]
CACHE_KEY_VIA: tuple[CacheKeyVia, ...] = ("prompt_cache_key", "user", "header")
CHAT_COMPLETIONS_PATH = "/chat/completions"
Routing = Literal["sticky", "round-robin"]
Dialect = Literal["openai", "llama-cpp-python"]
DIALECTS: tuple[Dialect, ...] = ("openai", "llama-cpp-python")
DEFAULT_MAX_OUTPUT_TOKENS = 4096
"""The cap on a turn whose client set no `max_output_tokens`: small models on local servers (llama.cpp,
Ollama) otherwise generate until their context is full, minutes on a CPU. Large enough for any agent turn."""


@dataclass(frozen=True, slots=True)
class OpenAIChatSettings:
    """Everything the engine needs to reach and talk to an OpenAI-compatible chat-completions server.

    upstreams: base URLs (`http://host:8000/v1`) or full `.../chat/completions` URLs; several are replicas.
    model: the upstream model name; None sends the client's `model` unchanged.
    connect_timeout_s: establishing a TCP connection. first_byte_timeout_s: from sending the request to the
    first body bytes (queueing and prefill included). idle_timeout_s: the longest gap between two reads.
    cooldown_s: how long a replica that failed to connect or answered 5xx is tried only as a last resort.
    developer_role: what a `developer` message becomes (most local chat templates know only `system`).
    reasoning: input reasoning items are dropped, or their text rides on the next assistant message as
    `reasoning_content` (vLLM, llama.cpp, DeepSeek) or `reasoning` (Ollama).
    cache_key_via: where the per-lane cache key goes (an opaque hash, never the raw key).
    named_tool_choice: a named tool choice as the standard object, or as `required` with only that tool
    (for servers that accept only the string forms, e.g. llama.cpp).
    extra_body: fields added to every upstream request; they never replace the ones the engine sets.
    message_cache_bytes: the budget of the encoded-message cache (common/chat_messages.MessageCache):
    each history item that becomes a chat message on its own is translated and encoded once, then
    spliced into later turns' bodies. It holds up to this many bytes of encoded JSON plus the items it
    keeps alive (about as much again), shared by all lanes; 0 disables it.
    default_max_output_tokens: sent as the output limit when the client gave none (0: send none, and the
    upstream's own default applies, unbounded on llama.cpp). A turn that reaches it is `incomplete` with
    reason `max_output_tokens`, as when the client's own limit is reached.
    routing: `sticky` sends each lane to the replica its cache key hashes to (rendezvous hashing), so the
    replica's prefix cache holds the lane's history; `round-robin` spreads turns over the replicas in turn
    (for comparison: every turn then lands where the lane's KV is most likely cold).
    dialect: `openai` speaks the standard chat API; `llama-cpp-python` works around that server's tool
    handling (see dialect.py; start it with `--chat_format chatml-function-calling`) and asks it for the
    exact prompt token count its streams do not report.
    """

    upstreams: tuple[str, ...]
    api_key: str | None = None
    model: str | None = None
    connect_timeout_s: float = 5.0
    first_byte_timeout_s: float = 120.0
    idle_timeout_s: float = 60.0
    cooldown_s: float = 10.0
    max_connections: int = 256
    keepalive_s: float = 60.0
    developer_role: Literal["system", "developer"] = "system"
    reasoning: Literal["drop", "reasoning_content", "reasoning"] = "drop"
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    include_usage: bool = True
    cache_key_via: frozenset[CacheKeyVia] = frozenset({"header"})
    cache_key_header: str = "X-Loopwire-Cache-Key"
    named_tool_choice: Literal["object", "required"] = "object"
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    context_window: int = 0
    """The upstream model's context window in tokens (input and output), so the server can truncate,
    compact or refuse a turn that would overflow it; 0: unknown (every turn is sent as it is)."""
    message_cache_bytes: int = 32 * 1024 * 1024
    default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    routing: Routing = "sticky"
    dialect: Dialect = "openai"

    def __post_init__(self) -> None:
        if not self.upstreams:
            raise ValueError("the openai-chat engine needs at least one upstream URL")
        endpoints = tuple(chat_endpoint(url) for url in self.upstreams)
        if len(set(endpoints)) != len(endpoints):
            raise ValueError("the upstream URLs must be distinct")
        timeouts = (self.connect_timeout_s, self.first_byte_timeout_s, self.idle_timeout_s)
        if min(timeouts) <= 0:
            raise ValueError("upstream timeouts must be positive")
        if self.cooldown_s < 0 or self.keepalive_s < 0:
            raise ValueError("cooldown_s and keepalive_s must not be negative")
        if self.context_window < 0:
            raise ValueError("context_window must not be negative (0: unknown)")
        if self.message_cache_bytes < 0:
            raise ValueError("message_cache_bytes must not be negative")
        if self.default_max_output_tokens < 0:
            raise ValueError("default_max_output_tokens must not be negative (0: no default limit)")
        if self.routing not in ("sticky", "round-robin"):
            raise ValueError("routing must be 'sticky' or 'round-robin'")
        if self.dialect not in DIALECTS:
            raise ValueError(f"dialect takes {', '.join(DIALECTS)}; got {self.dialect!r}")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if self.developer_role not in ("system", "developer"):
            raise ValueError("developer_role must be 'system' or 'developer'")
        if self.reasoning not in ("drop", "reasoning_content", "reasoning"):
            raise ValueError("reasoning must be 'drop', 'reasoning_content' or 'reasoning'")
        if self.max_tokens_field not in ("max_tokens", "max_completion_tokens"):
            raise ValueError("max_tokens_field must be 'max_tokens' or 'max_completion_tokens'")
        if self.named_tool_choice not in ("object", "required"):
            raise ValueError("named_tool_choice must be 'object' or 'required'")
        unknown = set(self.cache_key_via) - set(CACHE_KEY_VIA)
        if unknown:
            raise ValueError(f"cache_key_via takes {', '.join(CACHE_KEY_VIA)}; got {sorted(unknown)}")
        if "header" in self.cache_key_via and not self.cache_key_header.strip():
            raise ValueError("cache_key_header must name a header when the key is sent as one")

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(chat_endpoint(url) for url in self.upstreams)

    @classmethod
    def from_options(cls, **options: Any) -> OpenAIChatSettings:
        """Build from loose options, as a command line gives them: `upstream` may be one string of
        comma-separated URLs and `cache_key_via` a comma-separated string. Unknown names are a ValueError."""
        values = dict(options)
        if "upstream" in values:
            if "upstreams" in values:
                raise ValueError("give either 'upstream' or 'upstreams', not both")
            values["upstreams"] = values.pop("upstream")
        refuse_unknown("openai-chat", cls, values, aliases=("upstream",))
        values["upstreams"] = _split(values.get("upstreams", ()))
        if "cache_key_via" in values:
            values["cache_key_via"] = frozenset(_split(values["cache_key_via"]))
        return cls(**values)


def _split(value: str | Sequence[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(item.strip() for item in items if item.strip())


def chat_endpoint(url: str) -> str:
    """The chat-completions URL of an upstream given as a base URL or as the endpoint itself."""
    return upstream_endpoint(url, CHAT_COMPLETIONS_PATH)
