"""Where a deployment's compaction signing secret comes from: a file, the environment, or one generated once.

Owns finding (and, the first time, creating) the secret; must not sign or verify anything
(protocol/compaction.py does).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..protocol.compaction import MIN_SECRET_BYTES

ENV_VAR = "LOOPWIRE_COMPACTION_SECRET"
FILE_SUFFIX = ".compaction-secret"


@dataclass(frozen=True, slots=True)
class CompactionSecret:
    secret: bytes
    source: str
    """Where it came from, for the startup log."""
    shared: bool
    """False when this server made it up: other nodes cannot read its compaction items."""


def _checked(secret: bytes, where: str) -> bytes:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the compaction secret in {where} must be at least {MIN_SECRET_BYTES} bytes")
    return secret


def _read_file(path: Path) -> bytes:
    try:
        return _checked(path.read_bytes().strip(), str(path))
    except OSError as error:
        raise ValueError(f"cannot read the compaction secret file {str(path)!r}: {error.strerror}") from None


def _generated_beside(database: Path) -> Path:
    """The secret file next to the SQLite database, created once (atomically: a second process started at
    the same moment reads the first one's)."""
    path = database.with_name(database.name + FILE_SUFFIX)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_hex(32).encode("ascii") + b"\n")
    finally:
        os.close(fd)
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path


def resolve(secret_file: str | None, store_spec: str, environ: dict[str, str]) -> CompactionSecret:
    """`secret_file`, else the environment variable, else a secret generated beside the SQLite store (kept
    across restarts), else (memory store) one held in memory for this process only."""
    if secret_file is not None:
        return CompactionSecret(_read_file(Path(secret_file).expanduser()), f"file {secret_file}", True)
    from_env = environ.get(ENV_VAR, "").strip()
    if from_env:
        return CompactionSecret(_checked(from_env.encode("utf-8"), ENV_VAR), f"${ENV_VAR}", True)
    kind, _, arg = store_spec.strip().partition(":")
    if kind.strip().lower() == "sqlite" and arg.strip():
        path = _generated_beside(Path(arg.strip()).expanduser().absolute())
        return CompactionSecret(_read_file(path), f"a file generated at {path}", False)
    return CompactionSecret(secrets.token_bytes(32), "memory (made up by this process)", False)
