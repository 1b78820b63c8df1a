"""Helpers for checking events against the official SDK's typed classes."""

from __future__ import annotations

import typing
from typing import Any


def classes_by_type(union: Any) -> dict[str, type]:
    """Map each event `type` literal of an SDK discriminated union to its class."""
    members = typing.get_args(typing.get_args(union)[0])
    mapping: dict[str, type] = {}
    for cls in members:
        for literal in typing.get_args(cls.model_fields["type"].annotation):
            mapping[literal] = cls
    return mapping
