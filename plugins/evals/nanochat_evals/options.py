"""Options of the built-in evaluators (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass

from nanochat.core.config import option


@dataclass
class BpbOptions:
    """Options of the `bpb` evaluator.

    Attributes:
        dataset: a text dataset reference to measure bits per byte on.
        split: the split of that dataset.
        tokens: target tokens evaluated over all ranks.
        device_batch_size: rows per forward pass per process.
    """

    dataset: str = "demo-text"
    split: str = option("val", choices=("train", "val"))
    tokens: int = option(65536, ge=1)
    device_batch_size: int = option(8, ge=1)
