"""Loose engine options (as a command line or a config file gives them) checked the same way for every engine.

Owns refusing unknown option names (naming what is accepted) and the rule for an upstream URL (http or
https, no query or fragment, given as a base URL or as the endpoint itself); must not coerce values or
build settings (each engine's settings class and `factory.coerce` do).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any
from urllib.parse import urlsplit


def refuse_unknown(
    engine: str, settings_class: type, options: Mapping[str, Any], aliases: Iterable[str] = ()
) -> None:
    """ValueError naming every option that is neither a field of the (dataclass) settings nor an alias."""
    known = {item.name for item in fields(settings_class)} | set(aliases)
    unknown = set(options) - known
    if unknown:
        raise ValueError(
            f"unknown {engine} option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )


def upstream_endpoint(url: str, path: str) -> str:
    """The endpoint `path` of an upstream given as a base URL or as the endpoint itself."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"upstream URL {url!r} must be an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError(f"upstream URL {url!r} must not carry a query or fragment")
    base = url.rstrip("/")
    return base if base.endswith(path) else base + path
