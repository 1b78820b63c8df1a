"""Turns a store spec string ("memory", "sqlite:PATH") into an open store.

Owns spec parsing and the default wiring (SQLite behind write-behind); it must not hold any records itself.
"""

from __future__ import annotations

from pathlib import Path

from .base import Store
from .memory import MemoryStore
from .sqlite import SqliteStore
from .write_behind import WriteBehindStore

DEFAULT_SPEC = "sqlite:.loopwire/responses.db"


WRITE_MODES = ("inline", "behind", "through")


def open_store(spec: str, *, write: str = "inline") -> Store:
    """Open the store named by `spec`.

    "memory" is a bounded in-process MemoryStore. "sqlite:PATH" is a SqliteStore at PATH (relative paths
    are resolved against the current directory, "~" is expanded, parent directories are created). For
    SQLite, `write` says when a put is durable: "inline" commits on the caller's thread before put()
    returns (~50 us; survives a kill -9), "behind" returns at once and commits from a background writer
    (a crash may lose the last writes; a pending map keeps them resolvable meanwhile), "through" commits
    on the store's worker thread before put() returns. Raises ValueError on a bad spec or mode.
    """
    if write not in WRITE_MODES:
        raise ValueError(f"unknown store write mode {write!r}; expected one of {', '.join(WRITE_MODES)}")
    kind, sep, arg = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "memory":
        if sep:
            raise ValueError(f"bad store spec {spec!r}: 'memory' takes no argument")
        return MemoryStore()
    if kind == "sqlite":
        if not arg.strip():
            raise ValueError(f"bad store spec {spec!r}: expected 'sqlite:PATH', e.g. {DEFAULT_SPEC!r}")
        path = Path(arg.strip()).expanduser()
        if path.exists() and path.is_dir():
            raise ValueError(f"bad store spec {spec!r}: {str(path)!r} is a directory, not a database file")
        sqlite = SqliteStore(path.absolute(), inline_writes=write == "inline")
        return WriteBehindStore(sqlite) if write == "behind" else sqlite
    raise ValueError(f"unknown store spec {spec!r}: expected 'memory' or 'sqlite:PATH'")
