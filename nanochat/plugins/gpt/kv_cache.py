"""The GPT's generation cache: keys and values of every layer for a batch of rows (slots).

Keys and values live in two tensors of shape ``(n_layer, batch, n_kv_head, max_len, head_dim)``,
allocated (zeroed) on the first write (device and dtype of the first keys). Each row has its own
position (``positions[b]`` tokens held), so rows hold prompts of different lengths and a row can
be reset for a new sequence while the others go on. Stale entries past a row's position are never
read: attention masks every key beyond the querying token's position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


class KVCache:
    """Preallocated keys/values for ``batch_size`` rows of up to ``max_len`` tokens each.

    Args:
        batch_size: number of rows (slots).
        n_kv_head: key/value heads per layer.
        max_len: the most tokens one row can hold.
        head_dim: width of one head.
        n_layer: number of transformer blocks.
    """

    def __init__(
        self, batch_size: int, n_kv_head: int, max_len: int, head_dim: int, n_layer: int
    ) -> None:
        if batch_size < 1 or max_len < 1:
            raise ValueError(
                f"a cache needs batch_size >= 1 and max_len >= 1, not {batch_size}, {max_len}"
            )
        self.shape = (n_layer, batch_size, n_kv_head, max_len, head_dim)
        self.n_layer = n_layer
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self._layers: list[tuple[torch.Tensor, torch.Tensor]] = []  # views of keys/values
        # Positions live in a Python list: a decode step reads them without tensor operations
        # (and without waiting for a GPU).
        self._held = [0] * batch_size

    @property
    def batch_size(self) -> int:
        """Number of rows."""
        return self.shape[1]

    @property
    def max_len(self) -> int:
        """The most tokens one row can hold."""
        return self.shape[3]

    @property
    def positions(self) -> torch.Tensor:
        """Tokens held per row, ``(batch_size,)`` long (a new CPU tensor)."""
        return torch.tensor(self._held, dtype=torch.long)

    def reset(self, rows: Sequence[int] | None = None) -> None:
        """Empty ``rows`` (every row when None); their old keys are never read again."""
        for row in range(self.batch_size) if rows is None else rows:
            self._held[row] = 0

    def copy_rows(self, source: int, targets: Sequence[int]) -> None:
        """Make each of ``targets`` hold what row ``source`` holds."""
        targets = [t for t in targets if t != source]
        if not targets:
            return
        held = self._held[source]
        if self.keys is not None and self.values is not None and held:
            index = torch.tensor(targets, device=self.keys.device)
            for store in (self.keys, self.values):
                store[:, index, :, :held] = store[:, source : source + 1, :, :held].clone()
        for target in targets:
            self._held[target] = held

    def prepare(
        self, new_tokens: int, device: torch.device, rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, int, int | None, list[int]]:
        """Before a forward pass of ``new_tokens`` per row: the positions of the new tokens
        ``(rows, new_tokens)`` (None when the rows share a start, which then says it all), how
        many key slots the pass must read, that common start (None when rows differ), and the
        tokens each row holds before the pass.

        Raises:
            ValueError: a row would exceed ``max_len``.
        """
        held = list(self._held) if rows is None else [self._held[r] for r in rows.tolist()]
        low, high = min(held), max(held)
        needed = high + new_tokens
        if needed > self.max_len:
            raise ValueError(f"KV cache full: {needed} positions needed, {self.max_len} allocated")
        if low == high:
            return None, needed, low, held
        start = torch.tensor(held, device=device)[:, None]
        return start + torch.arange(new_tokens, device=device)[None, :], needed, None, held

    def insert_kv(
        self,
        layer_idx: int,
        k: torch.Tensor,
        v: torch.Tensor,
        positions: torch.Tensor | None,
        length: int,
        rows: torch.Tensor | None = None,
        start: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write one layer's new keys/values at each row's positions; return the first
        ``length`` slots of those rows.

        Args:
            layer_idx: the block writing.
            k: new keys, ``(B, n_kv_head, T, head_dim)``.
            v: new values, same shape.
            positions: ``(B, T)`` positions of the new tokens (from :meth:`prepare`; None
                when the rows share the first position ``start``).
            length: how many slots to return.
            rows: the cache rows of the ``B`` lines (None: every row, in order).
            start: the rows' common first position, when they share one (a slice write).
        """
        if self.keys is None or self.values is None:
            # zeros, not empty: masked-out slots still enter attention as 0 x value, and
            # uninitialised memory may hold NaN (0 x NaN = NaN)
            self.keys = torch.zeros(self.shape, device=k.device, dtype=k.dtype)
            self.values = torch.zeros(self.shape, device=k.device, dtype=k.dtype)
            self._layers = [(self.keys[i], self.values[i]) for i in range(self.n_layer)]
        b, h, t, d = k.shape
        if torch.is_grad_enabled():  # autograd tracks writes through fresh views only
            layer_k, layer_v = self.keys[layer_idx], self.values[layer_idx]
        else:
            layer_k, layer_v = self._layers[layer_idx]
        if start is not None and rows is None:
            layer_k.narrow(2, start, t).copy_(k)
            layer_v.narrow(2, start, t).copy_(v)
            return layer_k.narrow(2, 0, length), layer_v.narrow(2, 0, length)
        if positions is None:  # rows sharing a start, a subset of the cache's rows
            assert start is not None
            positions = start + torch.arange(t, device=k.device).expand(b, t)
        if rows is None:
            index = positions[:, None, :, None].expand(b, h, t, d)
            layer_k.scatter_(2, index, k.to(layer_k.dtype))
            layer_v.scatter_(2, index, v.to(layer_v.dtype))
            return layer_k[:, :, :length], layer_v[:, :, :length]
        heads = torch.arange(h, device=k.device)[None, :, None]
        where = (rows[:, None, None], heads, positions[:, None, :])
        layer_k[where] = k.to(layer_k.dtype)
        layer_v[where] = v.to(layer_v.dtype)
        return layer_k[rows, :, :length], layer_v[rows, :, :length]

    def advance(self, new_tokens: int, rows: torch.Tensor | None = None) -> None:
        """Move ``rows`` (every row when None) on by ``new_tokens`` after the last layer wrote."""
        for row in range(self.batch_size) if rows is None else rows.tolist():
            self._held[row] += new_tokens


@dataclass
class CachedPass:
    """What every attention layer needs during one cached forward pass."""

    cache: KVCache
    positions: torch.Tensor | None  # (B, T) position of each new token; None: see ``start``
    length: int  # key slots to read per row
    # (B, 1, T, length): key j visible to the token at position p if j <= p; None when that is
    # plain causal attention (``causal``) or every key is visible (one new token, shared position)
    mask: torch.Tensor | None
    causal: bool
    rows: torch.Tensor | None  # the cache rows of the batch's lines (None: all, in order)
    start: int | None  # the rows' common first position, when they share one
    # one new token per row: the keys each row holds after it (Python integers; else None)
    ends: list[int] | None = None
    _windows: dict[int, torch.Tensor] = field(default_factory=dict)

    def spans(self, window: int | None) -> list[tuple[int, int]]:
        """Per row, the keys its one new token sees: all it holds, or the last ``window``
        (a pass of one new token per row only)."""
        assert self.ends is not None
        if not window:
            return [(0, end) for end in self.ends]
        return [(max(0, end - window), end) for end in self.ends]

    def windowed(self, window: int) -> torch.Tensor:
        """The ``(B, 1, T, length)`` mask of a sliding-window layer (made once per pass)."""
        if window not in self._windows:
            positions = self.positions
            if positions is None:  # rows sharing a start: one mask for all of them
                assert self.start is not None
                device = self.cache.keys.device if self.cache.keys is not None else None
                positions = torch.arange(self.start, self.length, device=device)[None]
            self._windows[window] = window_mask(positions, self.length, window)
        return self._windows[window]


def window_mask(positions: torch.Tensor, length: int, window: int) -> torch.Tensor:
    """Sliding-window causal mask ``(B, 1, T, length)``: key ``j`` is visible to the token at
    position ``p`` (from ``positions``, ``B, T``) when ``p - window < j <= p``."""
    keys = torch.arange(length, device=positions.device)
    p = positions[:, :, None]
    return ((keys <= p) & (keys > p - window))[:, None]


def begin_cached_pass(
    cache: KVCache,
    idx: torch.Tensor,
    rows: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    max_context: int,
) -> tuple[tuple[torch.Tensor, torch.Tensor], CachedPass]:
    """Before a cached pass of ``idx`` (``B, T``) over ``rows`` of ``cache``: the rotary tables
    ``cos``/``sin`` (``1, L, 1, D/2``) at the new tokens' positions, and the pass's attention
    inputs (positions, keys to read, mask).

    Raises:
        ValueError: the rows would exceed ``max_context`` or the cache's length.
    """
    T = idx.size(1)
    if rows is not None:
        rows = rows.to(idx.device)
    positions, length, start, held = cache.prepare(T, idx.device, rows)
    ends = [h + 1 for h in held] if T == 1 else None
    if length > max_context:
        raise ValueError(f"sequence of {length} tokens exceeds the context {max_context}")
    if start is None:
        assert positions is not None
        cos_sin = cos[0][positions], sin[0][positions]  # (B, T, 1, D/2)
    else:
        cos_sin = cos.narrow(1, start, T), sin.narrow(1, start, T)
    causal = start == 0 and T > 1  # fresh rows: plain causal attention over the new tokens
    mask = None
    if not causal and not (start is not None and T == 1):
        if positions is None:
            assert start is not None
            positions = start + torch.arange(T, device=idx.device).expand(idx.size(0), T)
        keys = torch.arange(length, device=idx.device)
        mask = (keys[None, None, :] <= positions[:, :, None])[:, None]  # (B, 1, T, length)
    return cos_sin, CachedPass(cache, positions, length, mask, causal, rows, start, ends)
