"""The local engine: a transformers causal LM from a local directory, with per-lane KV reuse.

Owns the package's public names only, loaded lazily: importing settings or model_dir never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import LocalEngine
    from .kv_pool import LocalRenderState
    from .settings import LocalSettings

__all__ = ["LocalEngine", "LocalRenderState", "LocalSettings"]


def __getattr__(name: str) -> Any:
    if name == "LocalEngine":
        from .engine import LocalEngine

        return LocalEngine
    if name == "LocalRenderState":
        from .kv_pool import LocalRenderState

        return LocalRenderState
    if name == "LocalSettings":
        from .settings import LocalSettings

        return LocalSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
