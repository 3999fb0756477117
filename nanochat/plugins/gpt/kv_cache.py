"""A preallocated key/value cache for autoregressive generation with the GPT.

The cache holds one tensor of shape ``(n_layer, 2, batch, n_kv_head, max_len, head_dim)``;
each attention layer writes its new keys and values at the current position and reads back a
view of everything written so far. The position advances once the last layer has written, so
a forward pass over ``T`` new tokens moves the cache ``T`` positions on.
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer for a batch of sequences, preallocated up to ``max_len``.

    Args:
        batch_size: number of sequences generated together.
        n_kv_head: key/value heads per layer.
        max_len: the most positions the cache can hold.
        head_dim: width of one head.
        n_layer: number of transformer blocks.
        device: where to allocate; ``None`` allocates lazily on the first write (same device
            and dtype as the first keys written).
        dtype: element type; ``None`` follows the first keys written.
    """

    def __init__(
        self,
        batch_size: int,
        n_kv_head: int,
        max_len: int,
        head_dim: int,
        n_layer: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.shape = (n_layer, 2, batch_size, n_kv_head, max_len, head_dim)
        self.n_layer = n_layer
        self.max_len = max_len
        self.pos = 0
        self.cache: torch.Tensor | None = None
        if device is not None:
            self.cache = torch.empty(self.shape, device=device, dtype=dtype or torch.float32)

    @property
    def batch_size(self) -> int:
        """Number of sequences in the cache."""
        return self.shape[2]

    def reset(self) -> None:
        """Forget everything written (the memory stays allocated)."""
        self.pos = 0

    def get_pos(self) -> int:
        """Number of positions already written (the position of the next token)."""
        return self.pos

    def insert_kv(
        self, layer_idx: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the keys and values of ``T`` new positions of one layer.

        Args:
            layer_idx: the block writing.
            k: new keys, shape ``(batch, n_kv_head, T, head_dim)``.
            v: new values, same shape.

        Returns:
            Views of all keys and values of this layer so far,
            ``(batch, n_kv_head, pos + T, head_dim)``.

        Raises:
            ValueError: if the cache would overflow ``max_len``.
        """
        if self.cache is None:
            self.cache = torch.empty(self.shape, device=k.device, dtype=k.dtype)
        t0, t1 = self.pos, self.pos + k.size(2)
        if t1 > self.max_len:
            raise ValueError(f"KV cache full: {t1} positions needed, {self.max_len} allocated")
        self.cache[layer_idx, 0, :, :, t0:t1] = k
        self.cache[layer_idx, 1, :, :, t0:t1] = v
        keys = self.cache[layer_idx, 0, :, :, :t1]
        values = self.cache[layer_idx, 1, :, :, :t1]
        if layer_idx == self.n_layer - 1:
            self.pos = t1
        return keys, values

    def prefill(self, other: KVCache) -> None:
        """Copy another cache's contents in, broadcasting a batch of one to this batch.

        Used to prefill a prompt once and then sample several continuations of it.

        Args:
            other: a cache with the same layers, heads and head width, batch 1 or equal.
        """
        if other.cache is None:
            raise ValueError("the source KV cache is empty")
        if other.pos > self.max_len:
            raise ValueError(f"source holds {other.pos} positions, only {self.max_len} fit")
        if self.cache is None:
            self.cache = torch.empty(self.shape, device=other.cache.device, dtype=other.cache.dtype)
        n = other.pos
        self.cache[:, :, :, :, :n] = other.cache[:, :, :, :, :n]
        self.pos = n
