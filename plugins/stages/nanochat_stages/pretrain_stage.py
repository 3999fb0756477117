"""The `pretrain` stage: train the base GPT on a text dataset, resumably, on 1..N processes."""

from __future__ import annotations

import contextlib
import math
from typing import Any

from nanochat.core.errors import StageError, UsageError
from nanochat_stages.options import PretrainOptions

SAMPLE_PROMPTS = ("The", "Our nation", "In the year")


class PretrainStage:
    """Trains the run's model from scratch (or from its last checkpoint) on text."""

    def __init__(self, options: PretrainOptions):
        self.options = options

    def run(self, ctx: Any) -> dict[str, Any]:
        """Train until the step count, data ratio or time budget is reached."""
        from nanochat_stages.text_recipe import TextRecipe
        from nanochat_stages.training import TrainingLoop

        return TrainingLoop(ctx, self.options, TextRecipe(self.options)).run()


def plan_steps(options: Any, num_params: int, total_batch: int) -> int:
    """Number of optimizer steps: ``max_steps``, else tokens = ``data_param_ratio`` x params."""
    if options.max_steps > 0:
        return int(options.max_steps)
    if options.data_param_ratio <= 0:
        raise UsageError("set pretrain.max_steps or a positive pretrain.data_param_ratio")
    return max(1, math.ceil(options.data_param_ratio * num_params / total_batch))


def check_loss(
    loss: float, step: int, limit: float, last_checkpoint: int | None, stage: str = "pretrain"
) -> None:
    """Stop with a clear message when the loss is NaN, infinite or above ``limit``."""
    if math.isfinite(loss) and loss <= limit:
        return
    kept = (
        f"the last good checkpoint (step {last_checkpoint}) is kept"
        if last_checkpoint is not None
        else "no checkpoint was written yet"
    )
    raise StageError(
        f"training diverged at step {step}: loss {loss}; {kept}. "
        f"Lower the learning rates (-o {stage}.matrix_lr=...) and run again"
    )


def no_sync_unless(model: Any, sync: bool) -> contextlib.AbstractContextManager[Any]:
    """DDP's ``no_sync`` for micro-steps that should not all-reduce yet."""
    if sync or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()
