"""The report's PNG plots (matplotlib, no display): one curve per stage, labelled axes, units.

* ``training_loss.png``: training loss (nats/token) against the stage's step, every stage that
  trains on next-token prediction (not RL or DPO: their loss is a policy objective);
* ``validation.png``: validation bits/byte (text stages) and validation loss (chat stages);
* ``rewards.png``: mean reward, held-out pass@1 and the DPO loss of the stages that report them.

Noisy per-step curves (30 points or more) are drawn faint, with a moving average over them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nanochat.core.report import StageReport

# (metric key, axis label) of each panel of each figure; labels with "0 to 1" get that range.
TRAINING = [("loss", "training loss (nats/token)")]
VALIDATION = [("val_bpb", "validation bits/byte"), ("val_loss", "validation loss (nats/token)")]
REWARDS = [
    ("reward", "mean reward (0 to 1)"),
    ("pass@1", "held-out pass@1 (0 to 1)"),
    ("dpo_loss", "DPO loss (nats/pair)"),
]
# Stages whose records carry one of these keys optimise a policy objective, not nats/token.
POLICY_KEYS = ("reward", "dpo_loss")
SMOOTH_FROM = 30  # points; shorter curves are drawn as they are


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean of up to ``window`` values at each point (the first points average fewer)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of ``key`` in records that carry a step (the newest value per step:
    a resumed stage repeats steps); a ``base_<key>`` record (before training) is step 0."""
    from nanochat.core.report import finite_number

    points: dict[float, float] = {}
    for record in records:
        base = finite_number(record.get(f"base_{key}"))
        if base is not None:
            points.setdefault(0.0, base)
        step, value = finite_number(record.get("step")), finite_number(record.get(key))
        if step is not None and value is not None:
            points[step] = value
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def _curve(stage: StageReport, key: str) -> tuple[list[float], list[float]]:
    """The stage's ``key`` series as plotted: none for the loss of a policy-objective stage."""
    if key == "loss" and any(k in r for r in stage.records for k in POLICY_KEYS):
        return [], []
    return series(stage.records, key)


def _figure(
    stages: Sequence[StageReport], panels: list[tuple[str, str]], title: str, path: Path
) -> bool:
    """Draw one figure with a panel per metric that some stage reports; False if none does."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    present = [
        (key, label) for key, label in panels if any(len(_curve(s, key)[0]) > 0 for s in stages)
    ]
    if not present:
        return False
    fig, axes = plt.subplots(1, len(present), figsize=(6.4 * len(present), 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, label) in zip(axes[0], present, strict=True):
        for index, stage in enumerate(stages):  # a stage keeps its color in every figure
            steps, values = _curve(stage, key)
            if not steps:
                continue
            color = colors[index % len(colors)]
            if len(steps) < SMOOTH_FROM:
                ax.plot(steps, values, marker="o", markersize=3, label=stage.scope, color=color)
                continue
            window = max(5, len(steps) // 20)
            ax.plot(steps, values, color=color, alpha=0.25, linewidth=1)
            smooth = moving_average(values, window)
            ax.plot(steps, smooth, color=color, label=f"{stage.scope} ({window}-step mean)")
        ax.set_xlabel("step (within the stage)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        if "0 to 1" in label:
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(title="stage")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def draw_plots(stages: Sequence[StageReport], directory: Path) -> list[Path]:
    """Draw every plot the run has data for into ``directory``; the files written."""
    figures = [
        ("training_loss.png", TRAINING, "Training loss"),
        ("validation.png", VALIDATION, "Validation"),
        ("rewards.png", REWARDS, "Alignment (RL, DPO)"),
    ]
    written = []
    for name, panels, title in figures:
        path = directory / name
        if _figure(stages, panels, title, path):
            written.append(path)
        elif path.exists():
            path.unlink()
    return written
