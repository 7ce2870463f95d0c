"""A KV cache for the HF engine's decode loop: transformers' layout, without its per-token full copy."""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class GrowingLayer(DynamicLayer):
    """A DynamicLayer whose keys/values live in a buffer grown by chunks.

    transformers' DynamicLayer concatenates the whole cache with each new token (an O(length) copy per step,
    quadratic over a generation); here a step writes its token in place and returns a view.
    """

    chunk = 256  # tokens of spare capacity added per growth

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._kbuf: torch.Tensor | None = None
        self._vbuf: torch.Tensor | None = None
        self._len = 0

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self._len + key_states.shape[-2]
        if self._kbuf is None or end > self._kbuf.shape[-2]:
            cap = end + self.chunk
            kbuf = key_states.new_empty((*key_states.shape[:2], cap, key_states.shape[-1]))
            vbuf = value_states.new_empty((*value_states.shape[:2], cap, value_states.shape[-1]))
            if self._kbuf is not None:
                kbuf[:, :, : self._len] = self._kbuf[:, :, : self._len]
                vbuf[:, :, : self._len] = self._vbuf[:, :, : self._len]
            self._kbuf, self._vbuf = kbuf, vbuf
        self._kbuf[:, :, self._len : end] = key_states
        self._vbuf[:, :, self._len : end] = value_states
        self._len = end
        self.keys, self.values = self._kbuf[:, :, :end], self._vbuf[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._len if self.is_initialized else 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized and self._kbuf is not None:
            self._kbuf, self._vbuf = self._kbuf[indices], self._vbuf[indices]
            self.keys, self.values = self._kbuf[:, :, : self._len], self._vbuf[:, :, : self._len]

    def crop(self, tokens_to_remove: int) -> None:  # unused by the engine; keeps _len consistent if called
        super().crop(tokens_to_remove)
        self._len = self.keys.shape[-2] if self.is_initialized else 0


def new_cache(config):
    """The model's own DynamicCache layout, with plain full-attention layers swapped for growing ones
    (sliding-window and other special layers keep their transformers implementation)."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
