"""The opaque payload of a `compaction` item: a summary the server can read back when it is sent as input.

Owns the encoding only (compressed, base64, versioned); it is not encryption and claims no secrecy.
"""

from __future__ import annotations

import base64
import binascii
import zlib

_PREFIX = "lw1:"


def encode_summary(summary: str) -> str:
    packed = base64.urlsafe_b64encode(zlib.compress(summary.encode("utf-8"), 6)).decode("ascii")
    return _PREFIX + packed


def decode_summary(encrypted_content: str) -> str | None:
    """The summary text, or None when the payload was not made by this server."""
    if not encrypted_content.startswith(_PREFIX):
        return None
    try:
        return zlib.decompress(base64.urlsafe_b64decode(encrypted_content[len(_PREFIX) :])).decode("utf-8")
    except (binascii.Error, zlib.error, UnicodeDecodeError, ValueError):
        return None
