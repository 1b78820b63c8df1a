"""A real HAProxy for tests (see loopwire.bench.haproxy); a test that needs one skips, with the reason, when
haproxy is not installed (`make test` installs it with apt-get where it can)."""

from __future__ import annotations

import pytest

from loopwire.bench import haproxy
from loopwire.bench.haproxy import MISSING, Backend, Timing, find_haproxy

__all__ = ["Backend", "HaproxyProcess", "Timing", "require_haproxy"]


def require_haproxy() -> None:
    if find_haproxy() is None:
        pytest.skip(MISSING)


class HaproxyProcess(haproxy.HaproxyProcess):
    def __init__(self, *args: object, **options: object) -> None:
        require_haproxy()
        super().__init__(*args, **options)  # type: ignore[arg-type]
