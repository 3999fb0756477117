"""Hook implementations of nanochat-stages (imports nothing heavy)."""

from __future__ import annotations

from nanochat.core.components import ComponentSpec, Preset
from nanochat.core.hookspecs import hookimpl
from nanochat_stages.options import (
    DpoOptions,
    MidtrainOptions,
    PretrainOptions,
    RlOptions,
    SftOptions,
    TokenizerStageOptions,
)


@hookimpl
def nanochat_register_stages() -> list[ComponentSpec]:
    """The built-in training stages."""
    return [
        ComponentSpec(
            kind="stage",
            name="tokenizer",
            factory="nanochat_stages.tokenizer_stage:TokenizerStage",
            summary="train the run's tokenizer on a text dataset and measure bytes/token",
            options=TokenizerStageOptions,
            produces=("tokenizer",),
        ),
        ComponentSpec(
            kind="stage",
            name="pretrain",
            factory="nanochat_stages.pretrain_stage:PretrainStage",
            summary="pretrain the base model on a text dataset (resumable, DDP under torchrun)",
            options=PretrainOptions,
            extra={"report_label": "BASE"},
            produces=("model",),
        ),
        ComponentSpec(
            kind="stage",
            name="midtrain",
            factory="nanochat_stages.chat_stages:MidtrainStage",
            summary="teach the base model the chat format on a packed conversation mixture",
            options=MidtrainOptions,
            extra={"report_label": "MID"},
            produces=("model", "chat"),
        ),
        ComponentSpec(
            kind="stage",
            name="sft",
            factory="nanochat_stages.chat_stages:SftStage",
            summary="fine-tune the chat model on padded conversations (loss on assistant turns)",
            options=SftOptions,
            extra={"report_label": "SFT"},
            produces=("model", "chat"),
        ),
        ComponentSpec(
            kind="stage",
            name="rl",
            factory="nanochat_stages.rl_stage:RlStage",
            summary="on-policy RL (GRPO family) on a problems dataset, rewards from the dataset",
            options=RlOptions,
            extra={"report_label": "RL"},
            produces=("model", "chat"),
        ),
        ComponentSpec(
            kind="stage",
            name="dpo",
            factory="nanochat_stages.dpo_stage:DpoStage",
            summary="preference-tune the chat model (DPO) on preference pairs or on-policy pairs",
            options=DpoOptions,
            extra={"report_label": "DPO"},
            produces=("model", "chat"),
        ),
    ]


@hookimpl
def nanochat_register_presets() -> list[Preset]:
    """`tiny` (2 CPU cores) and the GPU recipes `d12`, `d20`, `d26`."""
    from nanochat_stages.presets import presets

    return presets()
