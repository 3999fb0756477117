"""Hook implementations of nanochat-gru (imports nothing heavy)."""

from __future__ import annotations

from dataclasses import dataclass

from nanochat.core.components import ComponentSpec
from nanochat.core.hookspecs import hookimpl


@dataclass
class GRUOptions:
    """Shape of the GRU language model.

    Attributes:
        n_layer: stacked GRU layers.
        n_embd: embedding and hidden width.
        sequence_len: training context length.
    """

    n_layer: int = 1
    n_embd: int = 64
    sequence_len: int = 64


@dataclass
class BytesOptions:
    """The byte tokenizer has no options (its vocabulary is 256 bytes + special tokens)."""


@dataclass
class PolishOptions:
    """A few more steps on the newest model, on a fixed text.

    Attributes:
        steps: optimizer steps.
        text: what to train on.
        lr_scale: multiplier of the model's own learning rates.
    """

    steps: int = 3
    text: str = "Polish makes perfect. "
    lr_scale: float = 0.5


@hookimpl
def nanochat_register_models() -> list[ComponentSpec]:
    """The `gru` model."""
    return [
        ComponentSpec(
            "model", "gru", "nanochat_gru.model:GRUFactory", "a GRU language model", GRUOptions
        )
    ]


@hookimpl
def nanochat_register_tokenizers() -> list[ComponentSpec]:
    """The `bytes` tokenizer."""
    return [
        ComponentSpec(
            "tokenizer",
            "bytes",
            "nanochat_gru.tokenizer:BytesFactory",
            "UTF-8 bytes as ids (no training)",
            BytesOptions,
        )
    ]


@hookimpl
def nanochat_register_stages() -> list[ComponentSpec]:
    """The `polish` stage: trains the newest model a little more and saves it."""
    return [
        ComponentSpec(
            "stage",
            "polish",
            "nanochat_gru.polish:PolishStage",
            "a few more steps on the run's newest model",
            PolishOptions,
            produces=("model",),
        )
    ]
