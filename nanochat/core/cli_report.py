"""``nanochat report``: write a run's report card (``report.md`` and its plots)."""

from __future__ import annotations

import click

from nanochat.core import registry as registry_module
from nanochat.core.errors import UsageError


@click.command("report")
@click.option("--run", "run_name", default="default", show_default=True, help="Run to report on.")
def report_command(run_name: str) -> None:
    """Write report.md of a run (finished or not) into its folder and print its path."""
    from nanochat.core.report import write_report
    from nanochat.core.rundir import run_directory

    run_dir = run_directory(run_name)
    if not run_dir.is_dir():
        raise UsageError(f"run {run_name!r} does not exist in {run_dir.parent}")
    click.echo(str(write_report(run_dir, registry_module.get_registry())))
