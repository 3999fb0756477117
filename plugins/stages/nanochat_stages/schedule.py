"""Learning-rate schedule: linear warmup, constant, then linear warmdown to a final fraction."""

from __future__ import annotations


def lr_multiplier(
    step: int, total_steps: int, warmup_ratio: float, warmdown_ratio: float, final_frac: float
) -> float:
    """The factor applied to every group's ``initial_lr`` at ``step`` (0-based) of ``total_steps``.

    Rises linearly over the first ``warmup_ratio`` of the steps, stays at 1, and falls linearly
    over the last ``warmdown_ratio`` of the steps to ``final_frac`` at the final step.
    """
    warmup = round(warmup_ratio * total_steps)
    warmdown = round(warmdown_ratio * total_steps)
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if warmdown > 0 and step >= total_steps - warmdown:
        progress = (total_steps - step) / warmdown  # 1 at the start of warmdown, ->0 at the end
        return progress + (1.0 - progress) * final_frac
    return 1.0


def budget_step(step: int, total_steps: int, elapsed_s: float, budget_s: float) -> int:
    """The step the schedule should be at: ``step``, or further when a time budget
    (``budget_s`` > 0) will end the stage first, as far as the time spent says (``elapsed_s`` of
    ``budget_s`` is that share of ``total_steps``). So a stage that the budget stops still
    warms down to its final learning rate instead of ending at full rate."""
    if budget_s <= 0:
        return step
    by_time = int(min(1.0, elapsed_s / budget_s) * (total_steps - 1))
    return max(step, by_time)
