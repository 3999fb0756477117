"""The shape of a GPT: the JSON-serialisable config stored in every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class GPTConfig:
    """The JSON-serialisable shape of a GPT (stored in every checkpoint).

    Attributes:
        vocab_size: number of token ids the tokenizer produces.
        n_layer: transformer blocks.
        n_head: query heads.
        n_kv_head: key/value heads; divides ``n_head``.
        n_embd: width of the residual stream.
        head_dim: width of one head (attention width is ``n_head * head_dim``).
        sequence_len: training context length.
        softcap: logit softcap; 0 disables it.
        vocab_multiple: embedding/head rows are padded up to a multiple of this.
        value_embeds: value-embedding tables ``K`` (0: none); ``K <= n_layer``.
        layer_scalars: learnable per-layer residual and embedding scalars.
        skip_connections: learnable U-net skips from the first to the last blocks.
        window_pattern: ``S``/``L`` per layer, tiled (``L`` alone: full attention everywhere).
        short_window: tokens an ``S`` layer attends to (0: ``sequence_len // 2``).

    The defaults of the last five are today's architecture before they existed, so a config
    saved without them loads as the model it was.
    """

    vocab_size: int = 4096
    n_layer: int = 4
    n_head: int = 2
    n_kv_head: int = 2
    n_embd: int = 256
    head_dim: int = 128
    sequence_len: int = 256
    softcap: float = 15.0
    vocab_multiple: int = 64
    value_embeds: int = 0
    layer_scalars: bool = False
    skip_connections: bool = False
    window_pattern: str = "L"
    short_window: int = 0

    def __post_init__(self) -> None:
        if self.n_head % self.n_kv_head != 0:
            raise ValueError(f"n_kv_head={self.n_kv_head} must divide n_head={self.n_head}")
        if self.head_dim % 2 != 0:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if not 0 <= self.value_embeds <= self.n_layer:
            raise ValueError(f"value_embeds={self.value_embeds} must be in 0..{self.n_layer}")
        if not self.window_pattern or set(self.window_pattern.upper()) - {"S", "L"}:
            raise ValueError(f"window_pattern={self.window_pattern!r}: use letters S and L")

    def window(self, layer_idx: int) -> int:
        """Tokens layer ``layer_idx`` attends to (0: the whole context)."""
        pattern = self.window_pattern.upper()
        if layer_idx == self.n_layer - 1 or pattern[layer_idx % len(pattern)] == "L":
            return 0
        return self.short_window or max(1, self.sequence_len // 2)

    def value_table(self, layer_idx: int) -> int | None:
        """The value-embedding table layer ``layer_idx`` reads (None: none)."""
        k = self.value_embeds
        if layer_idx < k:
            return layer_idx
        if layer_idx >= self.n_layer - k:
            return layer_idx - (self.n_layer - k)
        return None

    @property
    def padded_vocab_size(self) -> int:
        """``vocab_size`` rounded up to a multiple of ``vocab_multiple``."""
        m = self.vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict (for JSON)."""
        return asdict(self)
