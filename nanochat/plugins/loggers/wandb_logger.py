"""A logger that sends metrics to Weights & Biases; offline without an API key, never prompts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

from nanochat.core.errors import StageError
from nanochat.plugins.loggers.options import WandbOptions


def choose_mode(requested: str) -> str:
    """The wandb mode: the option, else ``$WANDB_MODE``, else offline unless a key is set."""
    if requested:
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class WandbLogger:
    """Logs each record with ``wandb.log``; numeric fields only, the step as wandb's step."""

    def __init__(self, options: WandbOptions):
        self.options = options
        self._run: Any = None

    def start(self, run_dir: Path, run_name: str, config: dict[str, Any]) -> None:
        """Start a wandb run whose files live in the run directory.

        Raises:
            StageError: the ``wandb`` package is not installed.
        """
        try:
            import wandb
        except ImportError:
            raise StageError(
                "--log wandb needs the wandb package: `uv add 'nanochat[wandb]'` or "
                "`pip install wandb`"
            ) from None

        mode = choose_mode(self.options.mode)
        os.environ.setdefault("WANDB_SILENT", "true")
        self._run = wandb.init(
            project=self.options.project,
            entity=self.options.entity or None,
            name=run_name,
            dir=str(run_dir),
            config=config,
            mode=cast(Any, mode),
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off"),
        )

    def log(self, record: dict[str, Any]) -> None:
        """Log the numeric fields of a record, prefixed by its stage."""
        if self._run is None:
            return
        stage = record.get("stage", "run")
        data = {
            f"{stage}/{k}": v
            for k, v in record.items()
            if k not in {"stage", "step", "time"} and isinstance(v, int | float)
        }
        if data:
            self._run.log(data)

    def finish(self) -> None:
        """Finish the wandb run (writes the offline run folder)."""
        if self._run is not None:
            self._run.finish()
            self._run = None
