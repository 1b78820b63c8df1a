"""The responses engine: loopwire in front of another server speaking the Responses API (HTTP or WebSocket).

Owns the package's public names only; must not hold logic of its own.
"""

from .engine import ResponsesEngine, ResponsesStats, UpstreamRender
from .events import EventParser, UpstreamFailure
from .settings import ResponsesSettings

__all__ = [
    "EventParser",
    "ResponsesEngine",
    "ResponsesSettings",
    "ResponsesStats",
    "UpstreamFailure",
    "UpstreamRender",
]
