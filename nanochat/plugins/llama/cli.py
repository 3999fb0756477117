"""``nanochat import PATH --run NAME``: pretrained weights become a run (the ``import`` stage)."""

from __future__ import annotations

from pathlib import Path

import click

from nanochat.core import registry as registry_module
from nanochat.core.cli import cli_plan, single_option
from nanochat.core.errors import UsageError


@click.command("import", context_settings={"show_default": True})
@click.argument("path", type=click.Path(path_type=Path))
@single_option("--run", "run_name", default="default", help="Run to create (folder under runs/).")
@click.option(
    "-o",
    "--option",
    "overrides",
    multiple=True,
    metavar="SCOPE.KEY=VALUE",
    help="Override an option, e.g. -o import.max_context=4096 (repeatable).",
)
def import_command(path: Path, run_name: str, overrides: tuple[str, ...]) -> None:
    """Import a pretrained Llama-architecture model from PATH, a GGUF file or a Hugging Face
    folder (config.json + *.safetensors + tokenizer.json), as run NAME.

    The model's own tokenizer and chat template come along; `nanochat chat --run NAME`,
    `nanochat serve --run NAME`, `nanochat eval ... --run NAME` and post-training stages
    (`nanochat run sft --model llama --run NAME`) use the imported model.
    """
    from nanochat.core.pipeline import run_pipeline

    path = path.expanduser()
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    reg = registry_module.get_registry()
    # AdamW for fine-tuning: recorded with the run, so later stages use it too
    options = [f"import.path={path.resolve()}", "model.optimizer=adamw", *overrides]
    plan = cli_plan(reg, ["import"], run_name, None, options, "llama", "pretrained", (), "cpu")
    run_pipeline(plan, reg, None)
