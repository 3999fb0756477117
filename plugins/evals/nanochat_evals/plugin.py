"""Hook implementations of nanochat-evals (imports nothing heavy)."""

from __future__ import annotations

from nanochat.core.components import ComponentSpec
from nanochat.core.hookspecs import hookimpl
from nanochat_evals.options import BpbOptions, Gsm8kEvalOptions


@hookimpl
def nanochat_register_evals() -> list[ComponentSpec]:
    """The built-in evaluators."""
    return [
        ComponentSpec(
            kind="eval",
            name="bpb",
            factory="nanochat_evals.bpb:BitsPerByte",
            summary="bits per byte of the newest model on a text dataset's split",
            options=BpbOptions,
            extra={"report_metrics": ("bpb",)},
        ),
        ComponentSpec(
            kind="eval",
            name="gsm8k",
            factory="nanochat_evals.gsm8k:Gsm8kEval",
            summary="accuracy (pass@k) of a chat model on a problems dataset, calculator on",
            options=Gsm8kEvalOptions,
            extra={"report_metrics": ("accuracy",)},
        ),
    ]
