"""What a usable local model directory holds, checked before anything heavy is imported.

Owns the file checks and their error messages; must not import torch or transformers.
"""

from __future__ import annotations

from pathlib import Path

_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER = ("tokenizer.json", "tokenizer.model", "vocab.json")


class ModelDirError(ValueError):
    """The directory cannot be loaded; the message says what is missing."""


def check_model_dir(path: str) -> Path:
    """The directory as a Path, or ModelDirError naming the missing piece. A hub name (`org/model`) is
    refused too: this engine never downloads."""
    directory = Path(path).expanduser()
    if not directory.exists():
        hint = " (this engine loads local directories only, never from a hub)" if "/" in path else ""
        raise ModelDirError(f"model directory {path!r} does not exist{hint}")
    if not directory.is_dir():
        raise ModelDirError(f"model path {path!r} is not a directory")
    missing: list[str] = []
    if not (directory / "config.json").is_file():
        missing.append("config.json")
    if not any((directory / name).is_file() for name in _WEIGHTS):
        missing.append("weights (" + " or ".join(_WEIGHTS[::2]) + ")")
    if not any((directory / name).is_file() for name in _TOKENIZER):
        missing.append("a tokenizer (" + " or ".join(_TOKENIZER) + ")")
    if missing:
        raise ModelDirError(f"model directory {path!r} is incomplete: missing {', '.join(missing)}")
    return directory
