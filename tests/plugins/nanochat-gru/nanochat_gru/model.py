"""A GRU language model implementing nanochat's model contract (and nothing more)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nanochat.core.models import OptimizerSettings
from nanochat_gru.plugin import GRUOptions

CONTEXT_FACTOR = 8  # a recurrent model has no hard context; generation is capped at 8x training


class GRUCache:
    """The hidden state of every row, and how many tokens each row has consumed."""

    def __init__(self, batch_size: int, max_len: int, n_layer: int, n_embd: int) -> None:
        self._max_len = max_len
        self.hidden = torch.zeros(n_layer, batch_size, n_embd)
        self._positions = torch.zeros(batch_size, dtype=torch.long)

    @property
    def batch_size(self) -> int:
        """Number of rows."""
        return int(self._positions.numel())

    @property
    def max_len(self) -> int:
        """The most tokens a row may consume."""
        return self._max_len

    @property
    def positions(self) -> torch.Tensor:
        """Tokens consumed per row."""
        return self._positions

    def reset(self, rows: Sequence[int] | None = None) -> None:
        """Forget ``rows`` (every row when None)."""
        index = slice(None) if rows is None else list(rows)
        self.hidden[:, index] = 0.0
        self._positions[index] = 0

    def copy_rows(self, source: int, targets: Sequence[int]) -> None:
        """Give ``targets`` the state of row ``source``."""
        self.hidden[:, list(targets)] = self.hidden[:, source : source + 1].clone()
        self._positions[list(targets)] = int(self._positions[source].item())


class GRULanguageModel(nn.Module):
    """Embedding, stacked GRU, output head."""

    def __init__(self, vocab_size: int, n_layer: int, n_embd: int, sequence_len: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self._sequence_len = sequence_len
        self.embed = nn.Embedding(vocab_size, n_embd)
        self.gru = nn.GRU(n_embd, n_embd, num_layers=n_layer, batch_first=True)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)

    @property
    def sequence_len(self) -> int:
        """Training context length."""
        return self._sequence_len

    @property
    def max_context(self) -> int:
        """Longest generation."""
        return self._sequence_len * CONTEXT_FACTOR

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, loss_reduction: str = "mean"
    ) -> torch.Tensor:
        """Logits, or the loss when ``targets`` are given."""
        out, _ = self.gru(self.embed(idx))
        logits = self.head(out).float()
        if targets is None:
            return logits
        return F.cross_entropy(
            logits.reshape(-1, self.vocab_size),
            targets.reshape(-1),
            ignore_index=-1,
            reduction=loss_reduction,
        )

    def flops_per_token(self) -> int:
        """6 FLOPs per weight of every matrix multiply (the embedding is a lookup)."""
        matmul = sum(p.numel() for p in self.gru.parameters() if p.ndim == 2)
        return 6 * (matmul + self.head.weight.numel())

    def new_cache(self, batch_size: int, max_len: int | None = None) -> GRUCache:
        """A zero hidden state for ``batch_size`` rows."""
        max_len = max_len or self.max_context
        if max_len > self.max_context:
            raise ValueError(f"max_len={max_len} exceeds the model's context {self.max_context}")
        return GRUCache(batch_size, max_len, self.gru.num_layers, self.gru.hidden_size)

    def forward_cached(
        self, idx: torch.Tensor, cache: GRUCache, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Continue ``rows`` (every row when None) from their hidden states."""
        device = idx.device
        if cache.hidden.device != device:
            cache.hidden = cache.hidden.to(device)
            cache._positions = cache._positions.to(device)
        index = torch.arange(cache.batch_size, device=device) if rows is None else rows.to(device)
        if int((cache.positions[index] + idx.size(1)).max()) > cache.max_len:
            raise ValueError(f"cache full: rows may hold {cache.max_len} tokens")
        start = cache.hidden[:, index].to(self.embed.weight.dtype)
        out, hidden = self.gru(self.embed(idx), start.contiguous())
        cache.hidden[:, index] = hidden.float()
        cache._positions[index] += idx.size(1)
        return self.head(out).float()


class GRUFactory:
    """Builds GRU models from options, and their optimizers."""

    def __init__(self, options: GRUOptions) -> None:
        self.options = options

    def config(self, vocab_size: int) -> dict[str, Any]:
        """The JSON config."""
        o = self.options
        return {
            "vocab_size": vocab_size,
            "n_layer": o.n_layer,
            "n_embd": o.n_embd,
            "sequence_len": o.sequence_len,
        }

    def build(self, config: dict[str, Any], device: Any = "cpu") -> GRULanguageModel:
        """A new model."""
        with torch.device(device):
            return GRULanguageModel(**config)

    def optimizers(
        self, model: GRULanguageModel, settings: OptimizerSettings
    ) -> list[torch.optim.Optimizer]:
        """One AdamW: recurrent weights at ``matrix_lr / 10``, the rest at their roles' rates."""
        groups = [
            {"params": list(model.gru.parameters()), "lr": settings.matrix_lr / 10},
            {"params": [model.embed.weight], "lr": settings.embedding_lr / 20},
            {"params": [model.head.weight], "lr": settings.unembedding_lr},
        ]
        optimizer = torch.optim.AdamW(groups, weight_decay=settings.weight_decay)
        for group in optimizer.param_groups:
            group["initial_lr"] = group["lr"]
        return [optimizer]
