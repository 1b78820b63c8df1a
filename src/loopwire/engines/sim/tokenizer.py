"""A deterministic byte-level tokenizer: special tokens and runs of word bytes are one token each, and so is
each punctuation byte.

Owns what one token is and how many a text costs; must not know about items, templates or caching.
"""

from __future__ import annotations

import re

# A token is a maximal run of bytes that are neither ASCII whitespace nor ASCII punctuation (so UTF-8
# letters belong to words), or a single ASCII punctuation byte; whitespace is free and rides along with the
# next token. Counting is two C-speed passes over the bytes (translate, split), so it is linear in the
# text's length but cheap enough that rendering a turn's delta never dominates a turn. Special tokens such as
# <|im_end|> are one token (by the byte rule they would be five: "<", "|", "im_end", "|", ">").
_PUNCTUATION = b"!\"#$%&'()*+,-./:;<=>?@[\\]^`{|}~"
_PUNCTUATION_TO_SPACE = bytes.maketrans(_PUNCTUATION, b" " * len(_PUNCTUATION))
_WS = " \t\n\r\x0b\x0c"
_PUNCT_CLASS = re.escape(_PUNCTUATION.decode())
_SPECIAL = re.compile(r"<\|\w+\|>")
_TOKEN = re.compile(f"[{_WS}]*(?:<\\|\\w+\\|>|[^{_WS}{_PUNCT_CLASS}]+|[{_PUNCT_CLASS}])")


def count_tokens(text: str) -> int:
    """How many tokens `text` costs."""
    if not text:
        return 0
    data = text.encode()
    words = len(data.translate(_PUNCTUATION_TO_SPACE).split())
    punctuation = len(data) - len(data.translate(None, _PUNCTUATION))
    specials = len(_SPECIAL.findall(text)) if "<|" in text else 0
    return words + punctuation - 4 * specials


def split_tokens(text: str) -> list[str]:
    """The tokens of `text`, in order; they concatenate back to `text` (trailing whitespace joins the last
    token), and there are count_tokens(text) of them unless the text is whitespace only."""
    if not text:
        return []
    tokens: list[str] = _TOKEN.findall(text)
    consumed = sum(map(len, tokens))
    if consumed < len(text):
        if tokens:
            tokens[-1] += text[consumed:]
        else:
            tokens = [text]
    return tokens
