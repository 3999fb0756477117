"""The ``gpt`` model factory: configs from options, models from configs, and optimizers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from nanochat.core.errors import UsageError
from nanochat.core.models import OptimizerSettings
from nanochat.plugins.gpt.model import GPT, GPTConfig
from nanochat.plugins.gpt.muon import Muon
from nanochat.plugins.gpt.options import GPTOptions

ADAMW_BETAS = (0.8, 0.95)
ADAMW_EPS = 1e-10
REFERENCE_WIDTH = 768  # AdamW learning rates are tuned at this width and scaled as 1/sqrt(width)
SCALAR_LR_SCALE = 0.1  # scalars (mixing weights near 1) take scalar_lr x this, not width-scaled


class GPTFactory:
    """Builds GPT models and their optimizers from :class:`GPTOptions`.

    Args:
        options: the model options (defaults if None).
    """

    def __init__(self, options: GPTOptions | None = None) -> None:
        self.options = options or GPTOptions()

    def config(self, vocab_size: int) -> dict[str, Any]:
        """The JSON-serialisable config of a model of these options.

        ``n_embd = aspect_ratio * depth``; ``n_head = ceil(n_embd / head_dim)``.

        Args:
            vocab_size: the tokenizer's vocabulary size (before padding).

        Returns:
            A dict with ``vocab_size, n_layer, n_head, n_kv_head, n_embd, head_dim,
            sequence_len, softcap, vocab_multiple, value_embeds, layer_scalars,
            skip_connections, window_pattern, short_window``.

        ``value_embeds`` is capped at ``depth``.

        Raises:
            UsageError: ``window_pattern`` is empty or has letters other than S and L.
        """
        o = self.options
        pattern = o.window_pattern.upper()
        if not pattern or set(pattern) - {"S", "L"}:
            raise UsageError(
                f"option model.window_pattern={o.window_pattern!r}: use the letters S (short "
                "window) and L (whole context), e.g. SSSL"
            )
        n_embd = o.aspect_ratio * o.depth
        n_head = max(1, math.ceil(n_embd / o.head_dim))
        n_kv_head = n_head if o.n_kv_head is None else o.n_kv_head
        cfg = GPTConfig(
            vocab_size=vocab_size,
            n_layer=o.depth,
            n_head=n_head,
            n_kv_head=n_kv_head,
            n_embd=n_embd,
            head_dim=o.head_dim,
            sequence_len=o.sequence_len,
            softcap=o.softcap,
            vocab_multiple=o.vocab_multiple,
            value_embeds=min(o.value_embeds, o.depth),
            layer_scalars=o.layer_scalars,
            skip_connections=o.skip_connections,
            window_pattern=pattern,
            short_window=o.short_window,
        )
        return cfg.to_dict()

    def build(self, config: dict[str, Any], device: torch.device | str = "cpu") -> GPT:
        """A new, initialised model from ``config``.

        Args:
            config: as returned by :meth:`config` (or stored in a checkpoint).
            device: where to create it; ``"meta"`` gives an uninitialised shell (call
                ``model.to_empty(device=...)`` then ``model.init_weights()``).

        Returns:
            The model; the caller moves it to its device.
        """
        with torch.device(device):
            model = GPT(GPTConfig(**config))
        if str(device) != "meta":
            model.init_weights()
        return model

    def optimizers(self, model: GPT, settings: OptimizerSettings) -> list[torch.optim.Optimizer]:
        """Muon for the hidden matrices, AdamW for the rest, each group with ``initial_lr``.

        The AdamW learning rates of the embeddings and the head are given at width 768 and
        scaled by ``sqrt(768 / n_embd)``; scalars take ``scalar_lr * 0.1`` at any width.
        Weight decay is decoupled and applies to the matrices and embeddings, not to scalars.
        Under DDP call this on every rank after wrapping: gradients arrive averaged and both
        optimizers are deterministic, so replicas stay identical (see :mod:`.muon`).

        Args:
            model: the (unwrapped) GPT.
            settings: learning rates by role (matrix = Muon; embedding, unembedding and scalar
                = AdamW), weight decay and the number of data-parallel ranks.

        Returns:
            ``[adamw, muon]``.
        """
        s = settings
        groups = model.parameter_groups()
        width_scale = (model.config.n_embd / REFERENCE_WIDTH) ** -0.5
        adam_groups = [
            dict(
                params=groups["embedding"],
                lr=s.embedding_lr * width_scale,
                weight_decay=s.weight_decay,
            ),
            dict(
                params=groups["unembedding"],
                lr=s.unembedding_lr * width_scale,
                weight_decay=s.weight_decay,
            ),
            dict(params=groups["scalar"], lr=s.scalar_lr * SCALAR_LR_SCALE, weight_decay=0.0),
        ]
        adam_groups = [g for g in adam_groups if g["params"]]
        fused = all(p.is_cuda for g in adam_groups for p in g["params"])
        adamw = torch.optim.AdamW(adam_groups, betas=ADAMW_BETAS, eps=ADAMW_EPS, fused=fused)
        muon = Muon(groups["matrix"], lr=s.matrix_lr, momentum=0.95, weight_decay=s.weight_decay)
        for opt in (adamw, muon):
            opt.defaults["world_size"] = s.world_size
            for group in opt.param_groups:
                group["initial_lr"] = group["lr"]
        return [adamw, muon]

    def export_formats(self) -> tuple[str, ...]:
        """The formats :meth:`export` writes: ``hf`` (safetensors + config + tokenizer)."""
        return ("hf",)

    def export(self, model: GPT, tokenizer: Any, fmt: str, out: Path) -> list[Path]:
        """Write ``model`` and ``tokenizer`` to the folder ``out`` (see :mod:`.export`).

        Raises:
            ValueError: ``fmt`` is not ``hf``.
        """
        if fmt != "hf":
            raise ValueError(f"gpt exports to hf only, not {fmt!r}")
        from nanochat.plugins.gpt.export import export_gpt

        return export_gpt(model, tokenizer, out)
