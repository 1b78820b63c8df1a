"""Turns a store spec string ("memory", "sqlite:PATH", "redis://...") into an open store.

Owns spec parsing and the default wiring (SQLite behind write-behind); it must not hold any records itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import Store
from .memory import MemoryStore
from .sqlite import SqliteStore
from .write_behind import WriteBehindStore

if TYPE_CHECKING:
    from .redis.store import RedisStore

DEFAULT_SPEC = "sqlite:.loopwire/responses.db"
SPEC_HELP = "'memory', 'sqlite:PATH' or a Redis URL (redis://HOST:PORT/DB, rediss://, redis+sentinel://, redis+cluster://)"


WRITE_MODES = ("inline", "behind", "through")


def check_spec(spec: str) -> None:
    """Raise ValueError for a spec open_store() would refuse, without opening anything."""
    from .redis.link import is_redis_spec, parse_spec

    if is_redis_spec(spec):
        parse_spec(spec)
        try:
            import redis  # noqa: F401
        except ImportError:
            raise ValueError("a redis store needs redis-py: pip install 'loopwire[redis]'") from None
        return
    kind, sep, arg = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "memory" and not sep:
        return
    if kind == "sqlite" and arg.strip():
        return
    raise ValueError(f"unknown store spec {spec!r}: expected {SPEC_HELP}")


def open_store(spec: str, *, write: str = "inline", ttl_s: int | None = None) -> Store:
    """Open the store named by `spec`.

    "memory" is a bounded in-process MemoryStore. "sqlite:PATH" is a SqliteStore at PATH (relative paths
    are resolved against the current directory, "~" is expanded, parent directories are created). For
    SQLite, `write` says when a put is durable: "inline" commits on the caller's thread before put()
    returns (~50 us; survives a kill -9), "behind" returns at once and commits from a background writer
    (a crash may lose the last writes; a pending map keeps them resolvable meanwhile), "through" commits
    on the store's worker thread before put() returns. A Redis URL is a RedisStore, shared by every node
    that names the same Redis; `ttl_s` is its retention (default 30 days, 0 = forever); "inline" and
    "through" both mean a put returns once Redis has it, "behind" puts a write-behind in front (then
    another node may not see a response for the few ms until it is written). Raises ValueError on a bad
    spec or mode.
    """
    if write not in WRITE_MODES:
        raise ValueError(f"unknown store write mode {write!r}; expected one of {', '.join(WRITE_MODES)}")
    check_spec(spec)
    from .redis.link import is_redis_spec

    if is_redis_spec(spec):
        from .redis.link import open_link
        from .redis.store import DEFAULT_TTL_S, RedisStore

        redis_store = RedisStore(open_link(spec), ttl_s=DEFAULT_TTL_S if ttl_s is None else ttl_s)
        return WriteBehindStore(redis_store) if write == "behind" else redis_store
    kind, _, arg = spec.strip().partition(":")
    if kind.strip().lower() == "memory":
        return MemoryStore()
    path = Path(arg.strip()).expanduser()
    if path.exists() and path.is_dir():
        raise ValueError(f"bad store spec {spec!r}: {str(path)!r} is a directory, not a database file")
    sqlite = SqliteStore(path.absolute(), inline_writes=write == "inline")
    return WriteBehindStore(sqlite) if write == "behind" else sqlite


def redis_store_of(store: Store) -> RedisStore | None:
    """The Redis store behind a store (through a write-behind), whose Redis also holds what nodes share."""
    from .redis.store import RedisStore

    inner = store.inner if isinstance(store, WriteBehindStore) else store
    return inner if isinstance(inner, RedisStore) else None
