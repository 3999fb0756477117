"""Options of the built-in loggers (kept apart so listing them imports nothing heavy)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ConsoleOptions:
    """Options of the console logger."""

    every: int = 1  # print one record in this many metric records that carry a step


@dataclass
class JsonlOptions:
    """Options of the JSONL logger."""

    filename: str = "metrics.jsonl"


@dataclass
class WandbOptions:
    """Options of the wandb logger."""

    project: str = "nanochat"
    entity: str = ""
    mode: str = ""  # online | offline | disabled; default: $WANDB_MODE, else offline without a key
