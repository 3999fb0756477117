"""``nanochat speedrun``: a preset's whole pipeline, then the report and how to use the model.

The pipeline is data: the preset's ``stages`` (``nanochat list presets -v`` shows them;
``--print`` prints the equivalent ``nanochat run`` command to vary it). Progress lines on stderr
say which stage of how many runs, the elapsed time, and an estimate of the rest from the
preset's per-stage ``estimates`` scaled by how fast this machine ran the stages so far.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence

import click

from nanochat.core import registry as registry_module
from nanochat.core.cli import cli_plan, component_options, single_option, torchrun_runtime
from nanochat.core.errors import UsageError
from nanochat.core.progress import format_duration
from nanochat.core.speedrun_progress import SpeedrunProgress

DEFAULT_PRESET = "tiny"


def run_command_line(
    preset: str, stages: Sequence[str], run_name: str, overrides: Sequence[str]
) -> str:
    """The ``nanochat run`` command that does what the speedrun does (without the report)."""
    words = ["nanochat", "run", *stages, "--preset", preset, "--run", run_name]
    for override in overrides:
        words += ["-o", override]
    return shlex.join(words)


@click.command("speedrun", context_settings={"show_default": True})
@single_option("--preset", "preset_name", default=DEFAULT_PRESET, help="Preset to run.")
@single_option("--run", "run_name", default="default", help="Run name (folder under runs/).")
@click.option("--print", "print_only", is_flag=True, help="Print the pipeline as a run command.")
@component_options("pretrain.max_steps=100")
def speedrun_command(
    preset_name: str,
    run_name: str,
    print_only: bool,
    overrides: tuple[str, ...],
    model: str | None,
    tokenizer: str | None,
    loggers: tuple[str, ...],
    device: str,
) -> None:
    """From nothing to a chat model: the preset's pipeline (tokenizer, pretraining, mid-training,
    SFT, RL and evals), resumable like any run, then the report.

    Run it again after an interruption: finished stages are skipped and the interrupted one
    resumes from its last checkpoint. --print shows the pipeline as a `nanochat run` command.
    """
    from nanochat.core.pipeline import run_pipeline
    from nanochat.core.report import write_report
    from nanochat.core.rundir import run_directory

    reg = registry_module.get_registry()
    preset = reg.preset(preset_name)
    if not preset.stages:
        with_stages = sorted(name for name, (_, p) in reg.presets().items() if p.stages)
        raise UsageError(
            f"preset {preset_name!r} has no speedrun pipeline; presets with one: "
            f"{', '.join(with_stages) or 'none'}"
        )
    stages = list(preset.stages)
    if print_only:
        click.echo(run_command_line(preset_name, stages, run_name, overrides))
        return
    plan = cli_plan(
        reg, stages, run_name, preset_name, overrides, model, tokenizer, loggers, device
    )
    scopes = [entry.scope for entry in plan.stages]
    progress = SpeedrunProgress(run_name, scopes, stages, preset.estimates)
    with torchrun_runtime(device) as runtime:
        main = runtime is None or runtime.is_main
        with reg.temporary_plugin(progress, "nanochat-speedrun-progress"):
            run_pipeline(plan, reg, runtime)
        if not main:
            return
        report = write_report(run_directory(run_name), reg)
    name = "" if run_name == "default" else f" --run {shlex.quote(run_name)}"
    click.echo(
        f"[speedrun] finished in {format_duration(time.monotonic() - progress.started)}", err=True
    )
    click.echo(f"Report:  {report}")
    click.echo(f'Chat:    nanochat chat{name} -p "What is 12 * 7?"   (or without -p to talk)')
    click.echo(f"Serve:   nanochat serve{name}   then open http://127.0.0.1:8000")
    sys.stdout.flush()
