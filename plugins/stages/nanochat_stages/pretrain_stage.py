"""The `pretrain` stage: train the base GPT on a text dataset, resumably, on 1..N processes."""

from __future__ import annotations

from typing import Any

from nanochat_stages.options import PretrainOptions


class PretrainStage:
    """Trains the run's model from scratch (or from its last checkpoint) on text."""

    def __init__(self, options: PretrainOptions):
        self.options = options

    def run(self, ctx: Any) -> dict[str, Any]:
        """Train until the step count, data ratio or time budget is reached."""
        from nanochat_stages.text_recipe import TextRecipe
        from nanochat_stages.training import TrainingLoop

        return TrainingLoop(ctx, self.options, TextRecipe(self.options)).run()
