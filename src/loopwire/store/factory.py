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


def open_store(spec: str, *, write_behind: bool = True) -> Store:
    """Open the store named by `spec`.

    "memory" is a bounded in-process MemoryStore. "sqlite:PATH" is a SqliteStore at PATH (relative paths
    are resolved against the current directory, "~" is expanded, parent directories are created), wrapped
    in a WriteBehindStore unless `write_behind` is False (write-through). Raises ValueError on a bad spec.
    """
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
        sqlite = SqliteStore(path.absolute())
        return WriteBehindStore(sqlite) if write_behind else sqlite
    raise ValueError(f"unknown store spec {spec!r}: expected 'memory' or 'sqlite:PATH'")
