"""A deterministic regex tokenizer: special tokens, short word pieces, punctuation and whitespace runs.

Owns what one token is and how many a text costs; must not know about items, templates or caching.
"""

from __future__ import annotations

import re

# Special tokens such as <|im_end|> (with one trailing newline) are one token; words split into pieces of at
# most 8 word characters, each carrying at most one leading whitespace character; other characters are
# one token each; remaining whitespace runs are one token. Every character matches some alternative, so the
# tokens always concatenate back to the text.
TOKEN_PATTERN = re.compile(r"<\|\w+\|>\n?|\s?\w{1,8}|\s?[^\w\s]|\s+")

_findall = TOKEN_PATTERN.findall
_subn = TOKEN_PATTERN.subn


def count_tokens(text: str) -> int:
    """How many tokens `text` costs; linear in its length, at C speed. Counting by substitution makes no
    string per token (unlike findall), which is markedly faster on long texts."""
    return _subn("", text)[1] if text else 0


def split_tokens(text: str) -> list[str]:
    """The tokens of `text`, in order; they concatenate back to `text`."""
    return _findall(text) if text else []
