"""Options of the built-in loggers (kept apart so listing them imports nothing heavy)."""

from __future__ import annotations

from dataclasses import dataclass

from nanochat.core.config import option


@dataclass
class ConsoleOptions:
    """Options of the console logger.

    Attributes:
        every: print one record in this many metric records that carry a step.
        stream: where to print: ``stdout``, or ``stderr`` (``nanochat eval`` uses stderr so that
            its stdout is the JSON result alone).
    """

    every: int = option(1, ge=1)
    stream: str = option("stdout", choices=("stdout", "stderr"))


@dataclass
class JsonlOptions:
    """Options of the JSONL logger.

    Attributes:
        filename: the file in the run directory that records are appended to.
    """

    filename: str = "metrics.jsonl"


@dataclass
class WandbOptions:
    """Options of the wandb logger.

    Attributes:
        project: the wandb project.
        entity: the wandb user or team; empty: wandb's default.
        mode: online, offline or disabled; empty: $WANDB_MODE, else offline without a key.
    """

    project: str = "nanochat"
    entity: str = ""
    mode: str = option("", choices=("", "online", "offline", "disabled"))
