"""Real redis-server processes for tests (see loopwire.bench.redis_processes); a test that needs one skips,
with the reason, when redis-server is not installed (`make test` installs it with apt-get where it can)."""

from __future__ import annotations

import pytest

from loopwire.bench import redis_processes
from loopwire.bench.redis_processes import (
    MISSING,
    RedisClusterProcesses,
    RedisSentinelProcesses,
    find_redis_server,
)

__all__ = ["RedisClusterProcesses", "RedisSentinelProcesses", "RedisServer", "require_redis"]


def require_redis() -> None:
    if find_redis_server() is None:
        pytest.skip(MISSING)


class RedisServer(redis_processes.RedisServer):
    def __init__(self, *args: object, **options: object) -> None:
        require_redis()
        super().__init__(*args, **options)  # type: ignore[arg-type]
