"""The `polish` stage: a third-party training stage that produces a model.

It uses only the run context: the newest model of the run, its plugin's optimizers, the run's
tokenizer, and a checkpoint recording which plugins made the model.
"""

from __future__ import annotations

from typing import Any

import torch

from nanochat.core.models import OptimizerSettings
from nanochat_gru.plugin import PolishOptions


class PolishStage:
    """Continues the newest model for a few steps on a fixed text."""

    def __init__(self, options: PolishOptions) -> None:
        self.options = options

    def run(self, ctx: Any) -> dict[str, Any]:
        """Train and save one checkpoint."""
        source = ctx.newest_model_checkpoint()
        model = ctx.load_model(source)
        factory = ctx.model_factory(source)
        optimizers = factory.optimizers(model, OptimizerSettings())
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * self.options.lr_scale
        tokenizer = ctx.load_tokenizer()
        ids = tokenizer.encode(self.options.text * 8)[: model.sequence_len + 1]
        batch = torch.tensor([ids])
        losses = []
        model.train()
        for _ in range(self.options.steps):
            loss = model(batch[:, :-1], batch[:, 1:])
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
            model.zero_grad(set_to_none=True)
            losses.append(float(loss))
            ctx.log(step=len(losses) - 1, loss=losses[-1])
        if ctx.is_main:
            meta = {k: source.meta.get(k) for k in ("model", "tokenizer", "model_config")}
            ctx.checkpoints.save(self.options.steps - 1, model.state_dict(), meta=meta)
        return {"source": str(source.path), "first_loss": losses[0], "last_loss": losses[-1]}
