"""The ``llama`` model factory: configs from options, models from configs, optimizers, export."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from nanochat.core.models import OptimizerSettings
from nanochat.plugins.gpt.muon import Muon
from nanochat.plugins.llama.model import Llama, LlamaConfig
from nanochat.plugins.llama.options import LlamaOptions

ADAMW_BETAS = (0.8, 0.95)
ADAMW_EPS = 1e-10
REFERENCE_WIDTH = 768  # AdamW learning rates are tuned at this width and scaled as 1/sqrt(width)
EXPORT_FORMATS = ("hf", "gguf")


class LlamaFactory:
    """Builds Llama models and their optimizers from :class:`LlamaOptions`.

    Args:
        options: the model options (defaults if None).
    """

    def __init__(self, options: LlamaOptions | None = None) -> None:
        self.options = options or LlamaOptions()

    def config(self, vocab_size: int) -> dict[str, Any]:
        """The JSON-serialisable config of a model of these options.

        ``n_head = n_embd / head_dim``; the MLP width is ``mlp_ratio * n_embd`` rounded up to a
        multiple of 64; ``max_context = context_factor * sequence_len``.

        Args:
            vocab_size: the tokenizer's vocabulary size (before padding).

        Raises:
            ValueError: ``n_embd`` is not a multiple of ``head_dim``.
        """
        o = self.options
        if o.n_embd % o.head_dim:
            raise ValueError(f"model.n_embd={o.n_embd} must be a multiple of head_dim={o.head_dim}")
        n_head = o.n_embd // o.head_dim
        cfg = LlamaConfig(
            vocab_size=vocab_size,
            n_layer=o.depth,
            n_head=n_head,
            n_kv_head=n_head if o.n_kv_head is None else o.n_kv_head,
            n_embd=o.n_embd,
            head_dim=o.head_dim,
            intermediate_size=math.ceil(o.mlp_ratio * o.n_embd / 64) * 64,
            sequence_len=o.sequence_len,
            max_context=o.sequence_len * o.context_factor,
            rope_theta=o.rope_theta,
            rms_norm_eps=o.rms_norm_eps,
            tie_embeddings=o.tie_embeddings,
            vocab_multiple=o.vocab_multiple,
        )
        return cfg.to_dict()

    def build(self, config: dict[str, Any], device: torch.device | str = "cpu") -> Llama:
        """A new, initialised model from ``config``.

        Args:
            config: as returned by :meth:`config` (or stored in a checkpoint).
            device: where to create it; ``"meta"`` gives an uninitialised shell.
        """
        with torch.device(device):
            model = Llama(LlamaConfig(**config))
        if str(device) != "meta":
            model.init_weights()
        return model

    def optimizers(self, model: Llama, settings: OptimizerSettings) -> list[torch.optim.Optimizer]:
        """Muon for the blocks' matrices, AdamW for embedding, head and norm gains (with
        ``optimizer="adamw"``: AdamW for the matrices too, at ``matrix_lr``, unscaled).

        The AdamW learning rates are given at width 768 and scaled by ``sqrt(768 / n_embd)``;
        weight decay applies to matrices and embeddings, not to the gains. A tied embedding is
        trained at the embedding learning rate.

        Returns:
            ``[adamw, muon]`` (``[adamw]``), every group with ``initial_lr``.
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
            dict(params=groups["scalar"], lr=s.scalar_lr * width_scale, weight_decay=0.0),
        ]
        if self.options.optimizer == "adamw":
            matrices = dict(params=groups["matrix"], lr=s.matrix_lr, weight_decay=s.weight_decay)
            adam_groups.insert(0, matrices)
        adam_groups = [g for g in adam_groups if g["params"]]
        fused = all(p.is_cuda for g in adam_groups for p in g["params"])
        adamw = torch.optim.AdamW(adam_groups, betas=ADAMW_BETAS, eps=ADAMW_EPS, fused=fused)
        optimizers: list[torch.optim.Optimizer] = [adamw]
        if self.options.optimizer == "muon":
            muon = Muon(
                groups["matrix"], lr=s.matrix_lr, momentum=0.95, weight_decay=s.weight_decay
            )
            optimizers.append(muon)
        for opt in optimizers:
            opt.defaults["world_size"] = s.world_size
            for group in opt.param_groups:
                group["initial_lr"] = group["lr"]
        return optimizers

    def export_formats(self) -> tuple[str, ...]:
        """The formats :meth:`export` writes."""
        return EXPORT_FORMATS

    def export(self, model: Llama, tokenizer: Any, fmt: str, out: Path) -> list[Path]:
        """Write ``model`` (and ``tokenizer``) to ``out`` in format ``fmt``.

        ``hf``: a folder ``LlamaForCausalLM`` loads (``config.json``, ``model.safetensors``,
        the tokenizer); ``gguf``: one GGUF file (F32 tensors, the tokenizer when it has a BPE
        vocabulary and merges).

        Returns:
            The files written.
        """
        if fmt == "hf":
            from nanochat.plugins.llama.hf_io import write_hf_folder

            return write_hf_folder(model, tokenizer, out)
        if fmt == "gguf":
            from nanochat.plugins.llama.gguf_io import write_gguf

            return write_gguf(model, tokenizer, out)
        raise ValueError(
            f"unknown export format {fmt!r} (llama writes {', '.join(EXPORT_FORMATS)})"
        )
