"""The opaque payload of a `compaction` item: a summary the server can read back when it is sent as input.

Owns the encoding (versioned, signed, compressed, base64) and the bounds on reading it back; it is not
encryption and claims no secrecy. The signing secret is per deployment and process-wide: `configure` sets it
once at startup (every node of a deployment must use the same one); until then a random one is used, so
payloads made by this process round-trip and nothing else does. Must not touch files or the environment.

Payload: "lw2:" + base64url(HMAC-SHA256(secret, "lw2:" + compressed) + zlib(summary)). Reading checks the
payload's size, then the signature, and only then inflates, at most `max_summary_bytes`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import zlib
from dataclasses import dataclass

_PREFIX = "lw2:"
_PREFIX_BYTES = _PREFIX.encode("ascii")
_MAC_BYTES = 32
_LEVEL = 6

MAX_PAYLOAD_CHARS = 256 * 1024
"""Longest `encrypted_content` of a loopwire payload read back (this server's own are a few KB)."""
MAX_SUMMARY_BYTES = 1024 * 1024
"""Most bytes a payload may inflate to (the summary is ~8,000 characters; a bomb is refused at this)."""
MIN_SECRET_BYTES = 16


class PayloadTooLarge(ValueError):
    """A loopwire payload past one of the bounds; `inflated` tells which (False: the payload itself)."""

    def __init__(self, limit: int, *, inflated: bool) -> None:
        what = "inflates to more than" if inflated else "is longer than"
        super().__init__(f"{what} {limit} bytes")
        self.limit = limit
        self.inflated = inflated


@dataclass(frozen=True, slots=True)
class SummaryCodec:
    """Signs and reads back summaries with one secret, within two bounds."""

    secret: bytes
    max_payload_chars: int = MAX_PAYLOAD_CHARS
    max_summary_bytes: int = MAX_SUMMARY_BYTES

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the compaction secret must be at least {MIN_SECRET_BYTES} bytes")

    def _mac(self, compressed: bytes) -> bytes:
        return hmac.new(self.secret, _PREFIX_BYTES + compressed, hashlib.sha256).digest()

    def seal(self, compressed: bytes) -> str:
        """The payload for already-compressed bytes (what `encode` does after compressing)."""
        return _PREFIX + base64.urlsafe_b64encode(self._mac(compressed) + compressed).decode("ascii")

    def encode(self, summary: str) -> str:
        return self.seal(zlib.compress(summary.encode("utf-8"), _LEVEL))

    def read(self, encrypted_content: str) -> str | None:
        """The summary, or None when the payload was not made by a server holding this secret (another
        format, malformed, or a bad signature). Raises PayloadTooLarge past a bound, before inflating more
        than `max_summary_bytes`."""
        if not encrypted_content.startswith(_PREFIX):
            return None
        if len(encrypted_content) > self.max_payload_chars:
            raise PayloadTooLarge(self.max_payload_chars, inflated=False)
        try:
            raw = base64.urlsafe_b64decode(encrypted_content[len(_PREFIX) :])
        except (binascii.Error, ValueError):
            return None
        mac, compressed = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, self._mac(compressed)):
            return None
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(compressed, self.max_summary_bytes + 1)
            if len(data) > self.max_summary_bytes:
                raise PayloadTooLarge(self.max_summary_bytes, inflated=True)
            if not inflater.eof:  # truncated: never made by encode()
                return None
            return data.decode("utf-8")
        except (zlib.error, UnicodeDecodeError):
            return None


_codec = SummaryCodec(secrets.token_bytes(32))


def configure(codec: SummaryCodec) -> None:
    """Use this secret and these bounds for every payload this process makes or reads (server startup)."""
    global _codec
    _codec = codec


def encode_summary(summary: str) -> str:
    return _codec.encode(summary)


def check_summary(encrypted_content: str, *, max_payload_chars: int, max_summary_bytes: int) -> None:
    """Raise PayloadTooLarge when a payload of this deployment is past either bound (others pass: they are
    never inflated)."""
    codec = _codec
    if (max_payload_chars, max_summary_bytes) != (codec.max_payload_chars, codec.max_summary_bytes):
        codec = SummaryCodec(codec.secret, max_payload_chars, max_summary_bytes)
    codec.read(encrypted_content)


def decode_summary(encrypted_content: str) -> str | None:
    """The summary text, or None when this deployment did not make the payload (or it is past a bound,
    which requests are refused for before an engine sees them)."""
    try:
        return _codec.read(encrypted_content)
    except PayloadTooLarge:
        return None
