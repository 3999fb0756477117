"""Hook implementations of nanochat-evals (imports nothing heavy)."""

from __future__ import annotations

from nanochat.core.components import ComponentSpec
from nanochat.core.hookspecs import hookimpl
from nanochat_evals.options import BpbOptions


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
        ),
    ]
