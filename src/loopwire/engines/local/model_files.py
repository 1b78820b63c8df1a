"""What the token-id upstream mode needs of a model, without its weights: the tokenizer (with its chat
template), the context window and the end-of-turn ids, from a model directory or a GGUF file.

A GGUF's tokenizer and config are read once (transformers parses the file: ~12 s here) and saved, weights
left out, into a small cached directory beside the GGUF conversions (`gguf.default_cache_root`); a full
conversion already there is used as it is. Loading the directory then takes ~1 s (docs/benchmarks.md).
Must not load or convert weights, render or generate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .gguf import cached_dir, default_cache_root, write_once
from .model_dir import ModelDirError, check_model, is_gguf


@dataclass(slots=True)
class ModelFiles:
    tokenizer: Any
    max_positions: int | None
    eos_ids: tuple[int, ...]


def tokenizer_dir(path: Path, cache_root: str | Path | None = None) -> Path:
    """A directory with the GGUF's tokenizer and config: its full conversion when one is cached, else a
    tokenizer-only one, written on first use."""
    root = Path(cache_root).expanduser() if cache_root else default_cache_root()
    full = cached_dir(path, root)
    if (full / "config.json").is_file():
        return full
    target = full.with_name(full.name + "-tokenizer")
    write_once(target, lambda staging: _save_tokenizer(path, staging))
    return target


def _save_tokenizer(source: Path, staging: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        config = AutoConfig.from_pretrained(source.parent, gguf_file=source.name)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ModelDirError(f"cannot read the GGUF file {str(source)!r}: {error}") from None
    tokenizer.save_pretrained(staging)
    config.save_pretrained(staging)


def load_files(model: str, cache_root: str | None = None) -> ModelFiles:
    """The tokenizer, context window and EOS ids of a model directory or GGUF file; never its weights."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    path = check_model(model)
    directory = tokenizer_dir(path, cache_root) if is_gguf(model) else path
    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise ModelDirError(f"cannot load the tokenizer of {model!r}: {error}") from None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    positions = getattr(text, "max_position_embeddings", None)
    eos = getattr(text, "eos_token_id", None)
    eos_ids = (eos,) if isinstance(eos, int) else tuple(int(t) for t in eos) if isinstance(eos, list) else ()
    return ModelFiles(tokenizer, positions if isinstance(positions, int) else None, eos_ids)
