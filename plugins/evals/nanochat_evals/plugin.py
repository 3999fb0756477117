"""Hook implementations of nanochat-evals (imports nothing heavy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nanochat.core.components import ComponentSpec
from nanochat.core.hookspecs import hookimpl
from nanochat_evals import options as o

if TYPE_CHECKING:
    import click

# The multiple-choice evaluators: one class, a default dataset and a report row each.
CHOICE_EVALS: tuple[tuple[str, type, str, str], ...] = (
    (
        "choices",
        o.ChoicesEvalOptions,
        "{dataset}",
        "accuracy on any choices dataset (dataset=NAME)",
    ),
    (
        "mmlu",
        o.MmluEvalOptions,
        "MMLU",
        "MMLU accuracy, micro and macro over 57 subjects (offline)",
    ),
    ("arc-easy", o.ArcEasyEvalOptions, "ARC-Easy", "ARC-Easy accuracy"),
    ("arc-challenge", o.ArcChallengeEvalOptions, "ARC-Challenge", "ARC-Challenge accuracy"),
    ("hellaswag", o.HellaswagEvalOptions, "HellaSwag", "HellaSwag accuracy"),
)


@hookimpl
def nanochat_register_evals() -> list[ComponentSpec]:
    """The built-in evaluators."""
    specs = [
        ComponentSpec(
            kind="eval",
            name="bpb",
            factory="nanochat_evals.bpb:BitsPerByte",
            summary="bits per byte of the newest model on a text dataset's split",
            options=o.BpbOptions,
            extra={"report_metrics": ("bpb",)},
        ),
        ComponentSpec(
            kind="eval",
            name="gsm8k",
            factory="nanochat_evals.gsm8k:Gsm8kEval",
            summary="accuracy (pass@k) of a chat model on a problems dataset, calculator on",
            options=o.Gsm8kEvalOptions,
            extra={"report_metrics": ("accuracy",)},
        ),
        ComponentSpec(
            kind="eval",
            name="core",
            factory="nanochat_evals.core_eval:CoreEval",
            summary="DCLM's CORE metric of a base model: centred accuracy over the bundle's tasks",
            options=o.CoreEvalOptions,
            extra={"report_metrics": ("core",), "report_rows": {"core": "CORE"}},
        ),
    ]
    specs += [
        ComponentSpec(
            kind="eval",
            name=name,
            factory="nanochat_evals.choices:MultipleChoiceEval",
            summary=summary,
            options=options,
            extra={"report_metrics": ("accuracy",), "report_rows": {"accuracy": row}},
        )
        for name, options, row, summary in CHOICE_EVALS
    ]
    return specs


@hookimpl
def nanochat_register_commands(cli: click.Group) -> None:
    """Add ``nanochat lm-eval``: lm-evaluation-harness's command line with the ``nanochat``
    model registered (for lm-eval releases that do not discover model entry points)."""
    from nanochat_evals.lm_eval_cli import lm_eval_command

    cli.add_command(lm_eval_command)
