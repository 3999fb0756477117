"""Options of the ``gpt`` model plugin (no torch import: listing components stays cheap)."""

from __future__ import annotations

from dataclasses import dataclass

from nanochat.core.config import option


@dataclass
class GPTOptions:
    """How big the GPT is; everything follows from ``depth``.

    Attributes:
        depth: number of transformer blocks (``n_layer``).
        aspect_ratio: model width per layer: ``n_embd = aspect_ratio * depth``.
        head_dim: width of one attention head; ``n_head = ceil(n_embd / head_dim)``
            (``n_embd`` is rounded up to a multiple of ``head_dim``).
        n_kv_head: key/value heads for grouped-query attention; ``None`` means ``n_head``
            (plain multi-head attention). Must divide ``n_head``.
        sequence_len: the longest context the model is trained on (rotary table length).
        softcap: logits are squashed to ``softcap * tanh(logits / softcap)``; 0 disables.
        vocab_multiple: the embedding and head are padded to a multiple of this many rows.
    """

    depth: int = option(4, ge=1, le=1024)
    aspect_ratio: int = option(64, ge=1, le=4096)
    head_dim: int = option(128, ge=1, le=4096)
    n_kv_head: int | None = option(None, ge=1, le=4096)
    sequence_len: int = option(256, ge=1, le=1_048_576)
    softcap: float = option(15.0, ge=0)
    vocab_multiple: int = option(64, ge=1)
