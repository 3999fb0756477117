"""Hook implementations of nanochat-hello (imports nothing heavy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from nanochat.core.components import ComponentSpec, Preset
from nanochat.core.hookspecs import hookimpl
from nanochat_hello.options import AllReduceOptions, CountOptions, HelloEvalOptions, HelloOptions


def _record(run: Any, event: dict[str, Any]) -> None:
    if run.is_main:
        with open(run.run_dir / "hello-events.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(event) + "\n")


@hookimpl
def nanochat_register_stages() -> list[ComponentSpec]:
    """Three stages: hello (writes a file), count (checkpointed loop), allreduce (torchrun)."""
    return [
        ComponentSpec(
            "stage",
            "hello",
            "nanochat_hello.stages:HelloStage",
            "write a greeting into the run directory",
            HelloOptions,
        ),
        ComponentSpec(
            "stage",
            "count",
            "nanochat_hello.stages:CountStage",
            "count to N, checkpointing every step",
            CountOptions,
        ),
        ComponentSpec(
            "stage",
            "allreduce",
            "nanochat_hello.stages:AllReduceStage",
            "sum each rank's number across processes",
            AllReduceOptions,
        ),
    ]


@hookimpl
def nanochat_register_evals() -> list[ComponentSpec]:
    """A model-free eval that scores the greeting's length."""
    return [
        ComponentSpec(
            "eval",
            "hello-eval",
            "nanochat_hello.stages:HelloEval",
            "score the greeting written by the hello stage",
            HelloEvalOptions,
        )
    ]


@hookimpl
def nanochat_register_presets() -> list[Preset]:
    """A preset that makes counting short and fast."""
    return [
        Preset("hello-fast", "count to 3 quickly", overrides={"count.steps": 3, "count.sleep": 0.0})
    ]


@hookimpl
def nanochat_register_commands(cli: click.Group) -> None:
    """Adds `nanochat hello NAME`."""

    @cli.command("hello")
    @click.argument("name")
    def hello(name: str) -> None:
        """Greet NAME (a command contributed by the nanochat-hello plugin)."""
        click.echo(f"hello, {name}!")


@hookimpl
def nanochat_stage_start(run: Any, stage: str) -> None:
    """Record that a stage started."""
    _record(run, {"hook": "stage_start", "stage": stage})


@hookimpl
def nanochat_stage_end(run: Any, stage: str, result: dict[str, Any]) -> None:
    """Record that a stage ended, with its result."""
    _record(run, {"hook": "stage_end", "stage": stage, "result": result})


@hookimpl
def nanochat_metrics(run_name: str, record: dict[str, Any]) -> None:
    """Count metric records seen, in a file next to the runs (metrics come from rank 0 only)."""
    import os

    home = Path(os.environ.get("NANOCHAT_HOME", "."))
    with open(home / f"hello-metrics-{run_name}.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
