"""Picking the next token (greedy, temperature, top-p) and turning generated ids into text increments.

Owns the sampling arithmetic and incremental detokenization; must not run the model or touch KV caches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


class Sampler:
    """Greedy at temperature 0; otherwise softmax(logits / temperature) restricted to the smallest set of
    tokens whose probability reaches top_p. Seeded once per engine, so a run is reproducible."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)

    def pick(self, logits: Any, temperature: float, top_p: float) -> int:
        if temperature <= 0.0:  # on the logits' device: from a GPU only the id crosses, not vocab floats
            return int(torch.argmax(logits).item())
        scores = logits.float().cpu()  # the seeded generator is a CPU one: the same draws on any device
        probs = torch.softmax(scores / temperature, dim=-1)
        if top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < top_p
            keep[0] = True
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        return int(torch.multinomial(probs, 1, generator=self.generator).item())


class Detokenizer:
    """Text increments of a growing id sequence. Decoding the whole output each step is simple and exact
    (merges and byte-level pieces resolve in context); a tail that ends in an incomplete UTF-8 sequence
    (U+FFFD) waits for the next token."""

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self.text = ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        full = self._decode(self.ids)
        if full.endswith("\ufffd") or not full.startswith(self.text):
            return ""
        delta, self.text = full[len(self.text) :], full
        return delta

    def flush(self) -> str:
        full = self._decode(self.ids)
        delta = full[len(self.text) :] if full.startswith(self.text) else ""
        self.text = full
        return delta
