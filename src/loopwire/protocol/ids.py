"""Opaque, unguessable identifiers for responses, items and calls.

Owns the prefixes and the randomness; never encodes meaning (owner, lane, node) into an id.
"""

from __future__ import annotations

import os


def new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(16).hex()}"


def response_id() -> str:
    return new_id("resp")


def message_id() -> str:
    return new_id("msg")


def function_call_id() -> str:
    return new_id("fc")


def call_id() -> str:
    return new_id("call")
