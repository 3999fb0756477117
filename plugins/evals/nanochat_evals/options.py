"""Options of the built-in evaluators (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BpbOptions:
    """Options of the `bpb` evaluator."""

    dataset: str = "demo-text"  # a text dataset reference
    split: str = "val"
    tokens: int = 65536  # target tokens evaluated over all ranks
    device_batch_size: int = 8
