"""The embedded simulated engine: deterministic text and tool calls with a realistic cost model.

Owns the package's public names only; must not hold logic of its own.
"""

from .engine import SimEngine, SimRenderState, SimSettings, SimStats

__all__ = ["SimEngine", "SimRenderState", "SimSettings", "SimStats"]
