"""What a usable local model directory (or GGUF file) holds, checked before anything heavy is imported.

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


GGUF_MAGIC = b"GGUF"


def is_gguf(path: str) -> bool:
    return path.lower().endswith(".gguf")


def check_model(path: str) -> Path:
    """A model directory, or a GGUF file (converted into a cached directory when the engine loads it)."""
    if not is_gguf(path):
        return check_model_dir(path)
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelDirError(f"GGUF file {path!r} does not exist (this engine loads local files only)")
    with file.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise ModelDirError(f"{path!r} is not a GGUF file (it does not start with the GGUF magic)")
    return file


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
