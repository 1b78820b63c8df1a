"""The options of the local engine: which model directory, where it runs, decoding defaults, the KV budget.

Owns option names, defaults and their validation; must not import torch or load anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..common.options import upstream_endpoint

Device = str
DType = Literal["auto", "float32", "float16", "bfloat16", "float64"]
DTYPES: tuple[DType, ...] = ("auto", "float32", "float16", "bfloat16", "float64")

DEFAULT_KV_BUDGET_BYTES = 1 << 30
COMPLETION_PATH = "/completion"
"""llama-server's native completion endpoint, the one that takes a prompt of token ids."""


@dataclass(frozen=True, slots=True)
class LocalSettings:
    """An in-process transformers causal LM.

    model: a local directory with config.json, weights and tokenizer files (never a hub name), or a
    `.gguf` file, dequantized once into a directory under gguf_cache (default: $LOOPWIRE_GGUF_CACHE, else
    ~/.cache/loopwire/gguf).
    device: "cpu" (default), "cuda", "cuda:N" or "mps". dtype: "auto" is the config's dtype on an
    accelerator and float32 on CPU.
    kv_budget_bytes: the memory all idle lanes' KV caches may hold together; least recently used lanes are
    evicted past it (their next turn re-prefills). kv_reuse: off makes every turn a full prefill (for
    benchmarks). render_cache: off renders and tokenizes the whole conversation every turn (for
    benchmarks); on, a lane's next turn renders only its new items. prefill_chunk_tokens: prompt tokens
    per forward pass (bounds activation memory, and a cancelled turn stops between chunks).
    jump_forward: feed the tokens a grammar forces (a forced tool call's fixed opening, written in the
    tokenizer's own spelling) in one forward pass (off: one pass per token, the same output, for
    benchmarks). max_output_tokens: the cap when a request sets none. temperature: used when a request sets
    none (0 is greedy). seed: of the sampler.
    upstream: token-id mode. The URL of a llama.cpp `llama-server` serving the same model file (e.g.
    http://127.0.0.1:8080): the engine loads only the model's tokenizer and chat template, renders each
    lane's prompt ids incrementally and sends them to the server's `/completion`, each lane on a slot of
    its own; no weights are loaded (device, dtype, kv_budget_bytes, kv_reuse and prefill_chunk_tokens do
    not apply). connect_timeout_s, first_byte_timeout_s (queueing and prefill included) and
    idle_timeout_s time its answers.
    """

    model: str
    device: Device = "cpu"
    dtype: DType = "auto"
    kv_budget_bytes: int = DEFAULT_KV_BUDGET_BYTES
    kv_reuse: bool = True
    prefill_chunk_tokens: int = 512
    max_output_tokens: int = 512
    temperature: float = 0.0
    seed: int = 0
    gguf_cache: str = ""
    render_cache: bool = True
    jump_forward: bool = True
    upstream: str = ""
    connect_timeout_s: float = 5.0
    first_byte_timeout_s: float = 120.0
    idle_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("the local engine needs a model: --model DIR or --model FILE.gguf")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not (self.device == "cpu" or self.device == "mps" or self.device.startswith("cuda")):
            raise ValueError(f"device must be cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.kv_budget_bytes < 0:
            raise ValueError("kv_budget_bytes must not be negative")
        if self.prefill_chunk_tokens < 1 or self.max_output_tokens < 1:
            raise ValueError("prefill_chunk_tokens and max_output_tokens must be at least 1")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError("temperature must be between 0 and 2")
        if min(self.connect_timeout_s, self.first_byte_timeout_s, self.idle_timeout_s) <= 0:
            raise ValueError("upstream timeouts must be positive")
        if self.upstream:
            upstream_endpoint(self.upstream, COMPLETION_PATH)  # the URL rule every upstream follows
            if self.device != "cpu" or self.dtype != "auto":
                raise ValueError(
                    "device and dtype do not apply with upstream: the model runs in the llama-server"
                )
