"""A user-space TCP link emulator (netem-like): delay, jitter and bandwidth per direction, cuts on demand.

Owns only the package's public names; it must not hold logic (each module below owns one job).

    async with LinkEmulator("127.0.0.1:8000", "wan") as link:
        # clients connect to 127.0.0.1:{link.port}; every connection gets 20 ms each way,
        # 20 Mbit/s up and 100 Mbit/s down
        ...
"""

from .emulator import DEFAULT_MAX_HELD_BYTES, LinkEmulator, parse_address
from .profiles import DIRECTIONS, PROFILES, Direction, DirectionShape, LinkProfile, resolve_profile
from .stats import ConnectionStats, DirectionStats, LinkTotals
from .timer import TimerStats

__all__ = [
    "DEFAULT_MAX_HELD_BYTES",
    "DIRECTIONS",
    "PROFILES",
    "ConnectionStats",
    "Direction",
    "DirectionShape",
    "DirectionStats",
    "LinkEmulator",
    "LinkProfile",
    "LinkTotals",
    "TimerStats",
    "parse_address",
    "resolve_profile",
]
