"""Hook implementations of nanochat-coin (imports nothing heavy)."""

from __future__ import annotations

from dataclasses import dataclass

from nanochat.core.components import ComponentSpec
from nanochat.core.hookspecs import hookimpl


@dataclass
class CoinOptions:
    """Sizes of the coin problems.

    Attributes:
        train_size: problems in ``train``.
        val_size: problems in ``val``.
    """

    train_size: int = 64
    val_size: int = 32


@hookimpl
def nanochat_register_datasets() -> list[ComponentSpec]:
    """The ``coin`` problems dataset."""
    return [
        ComponentSpec(
            kind="dataset",
            name="coin",
            factory="nanochat_coin.dataset:coin",
            summary="prompts whose answer is right when its text has an even length",
            options=CoinOptions,
            extra={"data_kind": "problems"},
        )
    ]
