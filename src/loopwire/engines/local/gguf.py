"""A GGUF file as a transformers model directory, converted once and cached.

Owns the cache location and key, writing a cached directory once (write_once: it appears atomically; the
token-id mode's tokenizer-only directories use it too, model_files) and the one-time conversion
(transformers dequantizes the GGUF; the quantizer config is dropped so `save_pretrained` accepts it).
Loading the converted directory takes ~5 s where loading the GGUF itself takes ~45 s on a 2-core CPU
(docs/benchmarks.md), hence the cache. Must not load a model for serving, render or generate.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from .model_dir import ModelDirError

_CHUNK = 1 << 20
_lock = threading.Lock()


def default_cache_root() -> Path:
    """`$LOOPWIRE_GGUF_CACHE`, else `$XDG_CACHE_HOME/loopwire/gguf`, else `~/.cache/loopwire/gguf`."""
    explicit = os.environ.get("LOOPWIRE_GGUF_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "loopwire" / "gguf"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()[:16]


def cached_dir(path: Path, cache_root: Path) -> Path:
    """Where the conversion of this file lives: keyed by its content, so a changed file converts again."""
    return cache_root / f"{path.stem}-{file_digest(path)}"


def converted(path: str | Path, cache_root: str | Path | None = None) -> Path:
    """The model directory for a GGUF file, converting it on first use."""
    source = Path(path).expanduser()
    root = Path(cache_root).expanduser() if cache_root else default_cache_root()
    target = cached_dir(source, root)
    write_once(target, lambda staging: _convert(source, staging))
    return target


def write_once(target: Path, write: Callable[[Path], None]) -> None:
    """Make the cached directory `target` unless it is complete (it has a config.json): `write` fills a
    staging directory beside it, which then appears under its name at once (another process that wrote
    it first wins)."""
    if (target / "config.json").is_file():
        return
    with _lock:
        if (target / "config.json").is_file():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            write(staging)
            try:
                staging.rename(target)
            except OSError:
                if not (target / "config.json").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _convert(source: Path, staging: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.float32
        )
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ModelDirError(f"cannot read the GGUF file {str(source)!r}: {error}") from None
    model.config.quantization_config = None  # the weights are dequantized: save them as plain tensors
    model.hf_quantizer = None  # type: ignore[assignment]
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
