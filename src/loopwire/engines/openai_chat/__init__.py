"""The openai-chat engine: loopwire in front of any OpenAI-compatible chat-completions server.

Owns the package's public names only; must not hold logic of its own.
"""

from .chunks import ChunkParser
from .engine import OpenAIChatEngine, OpenAIChatStats
from .settings import OpenAIChatSettings
from .translate import build_body, build_messages, build_tools

__all__ = [
    "ChunkParser",
    "OpenAIChatEngine",
    "OpenAIChatSettings",
    "OpenAIChatStats",
    "build_body",
    "build_messages",
    "build_tools",
]
