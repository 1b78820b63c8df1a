"""Items that have no message of their own in a model's chat, as the text an engine shows the model instead.

Owns the words for a compaction item (the summary this server wrote, under one heading, or a marker when
the payload is not readable) and the readable text of a reasoning item; must not decide roles, templates
or wire shapes (each engine does).
"""

from __future__ import annotations

from collections.abc import Mapping

from ...protocol.compaction import decode_summary
from ...protocol.items import Compaction, Reasoning

COMPACTION_PREFIX = "Summary of the conversation so far:\n"
UNREADABLE_COMPACTION = "(an earlier part of the conversation was compacted)"


def compaction_summary(item: Compaction) -> str:
    """The summary a compaction item holds, or the marker when this server did not write it."""
    summary = decode_summary(item.encrypted_content)
    return summary if summary is not None else UNREADABLE_COMPACTION


def compaction_text(item: Compaction) -> str:
    """A compaction item as one message's text: the heading, then the summary."""
    return COMPACTION_PREFIX + compaction_summary(item)


def reasoning_text(item: Reasoning) -> str:
    """The readable text of a reasoning item: its content when present, else its summary, else what this
    deployment sealed into its `encrypted_content` (a store=false client may send only that back)."""
    entries = item.content if item.content else item.summary
    texts: list[str] = []
    for entry in entries:
        text = entry.get("text") if isinstance(entry, Mapping) else getattr(entry, "text", None)
        if isinstance(text, str) and text:
            texts.append(text)
    if not texts and item.encrypted_content:
        return decode_summary(item.encrypted_content) or ""
    return "\n".join(texts)
