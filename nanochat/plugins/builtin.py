"""The plugin of the ``nanochat`` distribution: the built-in loggers (and, later, model,
tokenizer and server). It goes through the same entry-point door as any third-party plugin."""

from __future__ import annotations

from nanochat.core.components import ComponentSpec
from nanochat.core.hookspecs import hookimpl
from nanochat.plugins.loggers.options import ConsoleOptions, JsonlOptions, WandbOptions


@hookimpl
def nanochat_register_loggers() -> list[ComponentSpec]:
    """The console, JSONL and wandb metric loggers."""
    return [
        ComponentSpec(
            kind="logger",
            name="console",
            factory="nanochat.plugins.loggers.console:ConsoleLogger",
            summary="print metric records to the terminal (rank 0)",
            options=ConsoleOptions,
        ),
        ComponentSpec(
            kind="logger",
            name="jsonl",
            factory="nanochat.plugins.loggers.jsonl:JsonlLogger",
            summary="append every record to metrics.jsonl in the run directory",
            options=JsonlOptions,
        ),
        ComponentSpec(
            kind="logger",
            name="wandb",
            factory="nanochat.plugins.loggers.wandb_logger:WandbLogger",
            summary="send metrics to Weights & Biases (offline with WANDB_MODE=offline)",
            options=WandbOptions,
        ),
    ]
