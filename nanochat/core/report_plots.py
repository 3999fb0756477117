"""The report's PNG plots (matplotlib, no display): one curve per stage, labelled axes, units.

* ``training_loss.png``: training loss against the stage's step, every training stage;
* ``validation.png``: validation bits/byte (text stages) and validation loss (chat stages);
* ``rewards.png``: mean reward and held-out pass@1 of stages that report them (RL).
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
REWARDS = [("reward", "mean reward (0 to 1)"), ("pass@1", "held-out pass@1 (0 to 1)")]


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


def _figure(
    stages: Sequence[StageReport], panels: list[tuple[str, str]], title: str, path: Path
) -> bool:
    """Draw one figure with a panel per metric that some stage reports; False if none does."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    present = [
        (key, label)
        for key, label in panels
        if any(len(series(s.records, key)[0]) > 0 for s in stages)
    ]
    if not present:
        return False
    fig, axes = plt.subplots(1, len(present), figsize=(6.4 * len(present), 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, label) in zip(axes[0], present, strict=True):
        for index, stage in enumerate(stages):  # a stage keeps its color in every figure
            steps, values = series(stage.records, key)
            if steps:
                marker = "o" if len(steps) < 30 else None
                color = colors[index % len(colors)]
                ax.plot(steps, values, marker=marker, markersize=3, label=stage.scope, color=color)
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
        ("rewards.png", REWARDS, "Reinforcement learning"),
    ]
    written = []
    for name, panels, title in figures:
        path = directory / name
        if _figure(stages, panels, title, path):
            written.append(path)
        elif path.exists():
            path.unlink()
    return written
