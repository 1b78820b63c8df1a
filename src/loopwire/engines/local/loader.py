"""Loading a causal LM and its tokenizer from a local directory (or a converted GGUF) onto a device, never
from a hub.

Owns the transformers/torch loading calls, dtype and device choice, and KV size measurement; must not
render, decide reuse or generate.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any

import torch

from .device import auto_dtype, resolve_device
from .model_dir import ModelDirError, check_model, check_model_dir, is_gguf
from .settings import LocalSettings

_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


@dataclass(slots=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    device: Any
    config: Any
    cache_kwarg: str
    """What the model's forward names the KV cache: `cache` in recent transformers, else `past_key_values`."""
    max_positions: int | None
    eos_ids: tuple[int, ...]


def load(settings: LocalSettings) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # a server log is no terminal
    device = resolve_device(settings.device)  # before a GGUF conversion: a missing GPU fails at once
    if is_gguf(settings.model):
        from .gguf import converted

        directory = converted(check_model(settings.model), settings.gguf_cache or None)
    else:
        directory = check_model_dir(settings.model)
    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise ModelDirError(f"cannot load the model directory {settings.model!r}: {error}") from None
    dtype = _DTYPES[_dtype_name(settings.dtype, device, config)]
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, dtype=dtype)
    except (OSError, ValueError, KeyError) as error:
        raise ModelDirError(f"cannot load the weights in {settings.model!r}: {error}") from None
    model = model.to(device).eval()
    if device.type == "cpu":
        _gqa_without_copies()
    parameters = inspect.signature(model.forward).parameters
    cache_kwarg = "cache" if "cache" in parameters else "past_key_values"
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    max_positions = getattr(text_config, "max_position_embeddings", None)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=device,
        config=text_config,
        cache_kwarg=cache_kwarg,
        max_positions=max_positions if isinstance(max_positions, int) else None,
        eos_ids=_eos_ids(model),
    )


def _gqa_without_copies() -> None:
    """Grouped-query attention with a mask (every prefill chunk or multi-token forward that extends a KV
    cache) runs as one SDPA call over the shared key/value heads, not after copying them once per query
    head (transformers' `repeat_kv`: at 7k tokens of SmolLM2, 3 -> 9 heads, ~1 GB copied per forward and
    a quarter of an extension's attention time, measured in docs/benchmarks.md). transformers does this
    only when asked on CPU (its kernels for the masked GQA case are slower on some accelerators)."""
    os.environ.setdefault("TRANSFORMERS_SDPA_FORCE_GQA", "1")


def _dtype_name(setting: str, device: Any, config: Any) -> str:
    if setting != "auto":
        return setting
    declared = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    bf16 = device.type == "cuda" and bool(torch.cuda.is_bf16_supported())
    return auto_dtype(device.type, str(declared).removeprefix("torch.") if declared else None, bf16)


def _eos_ids(model: Any) -> tuple[int, ...]:
    generation = getattr(model, "generation_config", None)
    eos = getattr(generation, "eos_token_id", None)
    if isinstance(eos, int):
        return (eos,)
    if isinstance(eos, list | tuple):
        return tuple(int(token) for token in eos)
    return ()


def new_cache(loaded: LoadedModel) -> Any:
    """An empty KV cache for one lane, growing in place (kv_cache.py), up to the model's positions."""
    from .kv_cache import growing_cache

    return growing_cache(loaded.config, loaded.max_positions)


def cache_bytes(cache: Any) -> int:
    """Bytes the cache's tensors hold, counting each tensor's whole storage (a cropped tensor is a view)."""
    total = 0
    seen: set[int] = set()
    for layer in getattr(cache, "layers", ()):
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                if storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    total += storage.nbytes()
    return total
