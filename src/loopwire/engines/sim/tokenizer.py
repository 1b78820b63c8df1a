"""A deterministic byte-level tokenizer: special tokens and runs of word bytes are one token each, and so is
each punctuation byte.

Owns what one token is and how many a text costs; must not know about items, templates or caching.
"""

from __future__ import annotations

import re

# A token is a maximal run of bytes that are neither ASCII whitespace nor ASCII punctuation (so UTF-8
# letters belong to words), or a single ASCII punctuation byte; whitespace is free and rides along with the
# next token. Counting is a few C-speed passes over the bytes (translate, count), so it is linear in the
# text's length but cheap enough that rendering a turn's delta never dominates a turn. Special tokens such as
# <|im_end|> are one token (by the byte rule they would be five: "<", "|", "im_end", "|", ">").
_PUNCTUATION = b"!\"#$%&'()*+,-./:;<=>?@[\\]^`{|}~"
_WS = " \t\n\r\x0b\x0c"
# Every byte becomes "a" (inside a word) or " " (whitespace or punctuation): word runs are then counted as
# the occurrences of " a", with no per-token object.
_WORD_OR_GAP = bytes(0x20 if byte in _PUNCTUATION or chr(byte) in _WS else 0x61 for byte in range(256))
_PUNCT_CLASS = re.escape(_PUNCTUATION.decode())
_SPECIAL = re.compile(r"<\|\w+\|>")
# The trailing `\Z` lets a final run of whitespace match once, at its start: without it each position of
# the run was tried and failed in turn, quadratic in the run's length (16,000 spaces took 7 s).
_TOKEN = re.compile(f"[{_WS}]*(?:<\\|\\w+\\|>|[^{_WS}{_PUNCT_CLASS}]+|[{_PUNCT_CLASS}]|\\Z)")


_SHORT_TEXT = 64
_SHORT_MEMO_SIZE = 4096
_short_counts: dict[str, int] = {}


def count_tokens(text: str) -> int:
    """How many tokens `text` costs. Short texts (template pieces, names) recur every turn and are
    remembered in a bounded memo; long ones are always counted."""
    if len(text) <= _SHORT_TEXT:
        known = _short_counts.get(text)
        if known is None:
            known = _count(text)
            if len(_short_counts) < _SHORT_MEMO_SIZE:
                _short_counts[text] = known
        return known
    return _count(text)


def _count(text: str) -> int:
    if not text:
        return 0
    data = text.encode()
    classes = data.translate(_WORD_OR_GAP)
    words = classes.count(b" a") + (classes[0] == 0x61)
    punctuation = len(data) - len(data.translate(None, _PUNCTUATION))
    specials = len(_SPECIAL.findall(text)) if "<|" in text else 0
    return words + punctuation - 4 * specials


def split_tokens(text: str) -> list[str]:
    """The tokens of `text`, in order; they concatenate back to `text` (trailing whitespace joins the last
    token), and there are count_tokens(text) of them unless the text is whitespace only."""
    if not text:
        return []
    tokens: list[str] = _TOKEN.findall(text)
    if not tokens[-1]:
        tokens.pop()  # the empty match at the end
    if len(tokens) > 1 and tokens[-1].isspace():
        tail = tokens.pop()  # trailing whitespace joins the last token
        tokens[-1] += tail
    return tokens
