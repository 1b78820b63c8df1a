"""A lane's KV cache: per layer, key/value buffers that grow by doubling and are written in place.

transformers' DynamicCache grows by `torch.cat` on every forward: each decode step copies the whole cache
(at 7k tokens of SmolLM2-135M, ~320 MB per step into freshly faulted pages, half of the step's time). Here a
forward writes its new positions into spare room and attention reads views of the filled part; a buffer is
reallocated (doubling, up to the model's positions) only when full. `crop` only moves the length, so KV
reuse (extend, crop to a common prefix, roll back unverified draft tokens) costs nothing.

Owns the buffers, their growth and views; must not run the model or decide what to reuse.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

MIN_CAPACITY = 256
"""Positions a layer's buffers start with (a short turn does not reallocate every few tokens)."""


class GrowingLayer(DynamicLayer):  # type: ignore[no-untyped-call]  # (its __init_subclass__)
    """One attention layer's keys and values: `keys`/`values` are views `[..., :length, :]` of buffers
    with room for at least `length` positions."""

    is_croppable = True

    def __init__(self, max_length: int | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.max_length = max_length
        self.length = 0
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    @property
    def capacity(self) -> int:
        return 0 if self._key_buffer is None else int(self._key_buffer.shape[-2])

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            self._grow(end, key_states, value_states)
        assert self._key_buffer is not None and self._value_buffer is not None
        self._key_buffer[..., self.length : end, :].copy_(key_states)
        self._value_buffer[..., self.length : end, :].copy_(value_states)
        return self._set_length(end)

    def _grow(self, needed: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        capacity = max(needed, 2 * self.capacity, MIN_CAPACITY)
        if self.max_length is not None:
            capacity = max(min(capacity, self.max_length), needed)
        keys = key_states.new_empty((*key_states.shape[:-2], capacity, key_states.shape[-1]))
        values = value_states.new_empty((*value_states.shape[:-2], capacity, value_states.shape[-1]))
        if self.length and self._key_buffer is not None and self._value_buffer is not None:
            keys[..., : self.length, :].copy_(self._key_buffer[..., : self.length, :])
            values[..., : self.length, :].copy_(self._value_buffer[..., : self.length, :])
        self._key_buffer, self._value_buffer = keys, values

    def _set_length(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._key_buffer is not None and self._value_buffer is not None
        self.length = length
        keys, values = self._key_buffer[..., :length, :], self._value_buffer[..., :length, :]
        self.keys, self.values = keys, values
        return keys, values

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, tokens_to_remove: int) -> None:
        """Drops the last `-tokens_to_remove` positions (negative, as DynamicLayer.crop takes it)."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes the (negative) number of positions to drop, got {tokens_to_remove}")
        if tokens_to_remove == 0 or self._key_buffer is None:
            return
        self._set_length(max(self.length + tokens_to_remove, 0))

    def reset(self) -> None:
        self.length = 0
        self._key_buffer = self._value_buffer = None
        super().reset()

    def _adopt(self) -> None:
        """After an operation that replaced `keys`/`values` with new tensors: they become the buffers."""
        if self.keys is None or self.values is None or self.keys.numel() == 0:
            return
        self._key_buffer, self._value_buffer = self.keys.contiguous(), self.values.contiguous()
        self._set_length(int(self._key_buffer.shape[-2]))

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._adopt()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._adopt()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self._adopt()


def growing_cache(config: Any, max_length: int | None) -> Any:
    """A DynamicCache for `config` whose full-attention layers are GrowingLayers (sliding-window and other
    special layers keep transformers' own classes; a config naming no layers keeps a plain DynamicCache)."""
    cache = DynamicCache(config=config)
    layers = cache.layers
    cache.layers = [GrowingLayer(max_length) if type(layer) is DynamicLayer else layer for layer in layers]
    return cache
