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
        value_embeds: value-embedding tables (embeddings of the input ids added to the
            attention values); table ``j`` feeds layer ``j`` and layer ``depth - K + j``.
            0: none. More than ``depth`` count as ``depth``.
        layer_scalars: learnable per-layer scalars mixing the residual stream with the
            embedding before each block (``r_i * x + s_i * x0``).
        skip_connections: learnable U-net skips from the first half of the blocks to the
            mirrored blocks of the second half.
        window_pattern: attention span per layer, tiled over the layers: ``S`` sees the last
            ``short_window`` tokens, ``L`` the whole context; the last layer is always ``L``.
        short_window: tokens an ``S`` layer attends to; 0: half of ``sequence_len``.

    Setting ``value_embeds=0 layer_scalars=false skip_connections=false window_pattern=L``
    gives the GPT of before these options (what a checkpoint without them holds).
    """

    depth: int = option(4, ge=1, le=1024)
    aspect_ratio: int = option(64, ge=1, le=4096)
    head_dim: int = option(128, ge=1, le=4096)
    n_kv_head: int | None = option(None, ge=1, le=4096)
    sequence_len: int = option(256, ge=1, le=1_048_576)
    softcap: float = option(15.0, ge=0)
    vocab_multiple: int = option(64, ge=1)
    value_embeds: int = option(4, ge=0, le=1024)
    layer_scalars: bool = option(True)
    skip_connections: bool = option(False)
    window_pattern: str = option("L")
    short_window: int = option(0, ge=0)
