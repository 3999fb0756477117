"""``nanochat lm-eval ARGS``: lm-evaluation-harness's own command line, with the ``nanochat``
model registered first (lm-eval releases without plugin discovery cannot find it otherwise)."""

from __future__ import annotations

import sys

import click

from nanochat.core.errors import UsageError

INSTALL = "pip install 'nanochat-evals[lm-eval]'"


@click.command(
    "lm-eval",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def lm_eval_command(args: tuple[str, ...]) -> None:
    """Run lm-evaluation-harness with nanochat runs as models: `nanochat lm-eval --model
    nanochat --model_args run=NAME,source=sft --tasks TASKS` (all of lm-eval's options;
    `nanochat lm-eval --help` shows them)."""
    try:
        from lm_eval.__main__ import cli_evaluate

        import nanochat_evals.lm_eval_adapter  # noqa: F401 - registers the `nanochat` model
    except ImportError as exc:
        raise UsageError(f"lm-evaluation-harness is not installed ({exc}); {INSTALL}") from None
    saved = sys.argv
    sys.argv = ["lm-eval", *args]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
