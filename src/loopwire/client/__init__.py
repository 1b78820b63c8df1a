"""loopwire's client: one async session over HTTP (full or chained) or WebSocket mode, fast libraries only.

Owns the public names of the client package; holds no logic (each module below has one job).

    async with Session("http://127.0.0.1:8000/v1", "ws", api_key="sk-...") as session:
        conversation = [{"type": "message", "role": "user", "content": "Fix the failing test."}]
        result = await session.run_turn(conversation, model="sim", tools=TOOLS, tool_choice="required")
        conversation += result.output
"""

from .backoff import Backoff, SocketHealth
from .delta import InputPlan, Item, LastResponse, plan_input
from .errors import (
    ClientError,
    ConnectionLost,
    RequestError,
    StreamError,
    TransportError,
    TurnInterrupted,
    UpgradeRefused,
)
from .events import RESEND_EVENT
from .options import TRANSPORTS, SessionOptions, TransportName
from .result import TurnMetrics, TurnResult
from .session import Session, TurnStream
from .ws import websocket_url

__all__ = [
    "RESEND_EVENT",
    "TRANSPORTS",
    "Backoff",
    "ClientError",
    "ConnectionLost",
    "InputPlan",
    "Item",
    "LastResponse",
    "RequestError",
    "Session",
    "SessionOptions",
    "SocketHealth",
    "StreamError",
    "TransportError",
    "TransportName",
    "TurnInterrupted",
    "TurnMetrics",
    "TurnResult",
    "TurnStream",
    "UpgradeRefused",
    "plan_input",
    "websocket_url",
]
