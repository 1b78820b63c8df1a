"""Socket-level operations on asyncio transports: an abrupt close with a TCP reset, and TCP_NODELAY.

Owns the socket options only; it must not decide when a connection is closed or reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

_LINGER_ZERO = struct.pack("ii", 1, 0)


def abort_with_reset(transport: asyncio.Transport) -> None:
    """Closes at once and makes the kernel send RST rather than FIN (SO_LINGER 0), dropping unsent data;
    falls back to a plain abort when the socket cannot be reached."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    transport.abort()


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """The emulator decides when bytes leave; Nagle's algorithm must not hold small writes back."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError, ValueError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def peer_name(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
