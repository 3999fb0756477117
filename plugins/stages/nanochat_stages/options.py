"""Options of the built-in stages (no heavy imports: the CLI lists them without torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenizerStageOptions:
    """Options of the `tokenizer` stage."""

    dataset: str = "demo-text"  # a text dataset reference
    vocab_size: int = 32768  # ids in total, special tokens included
    max_chars: int = 2_000_000_000  # character budget of training text
    doc_cap: int = 10_000  # each document is cut to at most this many characters
    eval_chars: int = 2_000_000  # held-out characters for the bytes/token measurement
    seed: int = 0


@dataclass
class TrainingOptions:
    """Options every training stage shares (batch, schedule, optimizer, cadence)."""

    device_batch_size: int = 8  # rows per forward pass per process
    total_batch_tokens: int = 0  # tokens per optimizer step over all ranks; 0 = one micro-step
    max_steps: int = 0  # 0: derived from the data (see each stage)
    time_budget_s: float = 0.0  # stop after this many seconds of training (0: no budget)
    warmup_ratio: float = 0.0
    warmdown_ratio: float = 0.2
    final_lr_frac: float = 0.0
    matrix_lr: float = 0.02
    embedding_lr: float = 0.2
    unembedding_lr: float = 0.004
    scalar_lr: float = 0.5
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0 disables clipping
    eval_every: int = 100  # validation every N steps (and at the end)
    sample_every: int = 0  # samples every N steps (0: only at the end)
    sample_tokens: int = 24
    checkpoint_every: int = 100
    keep_checkpoints: int = 2  # newest checkpoints kept (the final one is always kept)
    compile: bool = False  # torch.compile the model (CUDA only)
    max_loss: float = 50.0  # a loss above this (or NaN) stops the stage
    seed: int = 0


@dataclass
class PretrainOptions(TrainingOptions):
    """Options of the `pretrain` stage."""

    dataset: str = "demo-text"  # a text dataset reference
    data_param_ratio: float = 20.0  # training tokens per parameter, when max_steps is 0
    eval_tokens: int = 32768  # validation tokens per evaluation (over all ranks)
    doc_buffer: int = 128  # documents the best-fit packer chooses from
    doc_cap: int = 100_000  # characters per document at most


@dataclass
class MidtrainOptions(TrainingOptions):
    """Options of the `midtrain` stage (continues from the newest `pretrain` checkpoint)."""

    # Online the reference recipe is smoltalk:1,gsm8k:4,identity:2,arithmetic:1 (gsm8k's
    # train split needs the hub); the default stays offline so that it always runs.
    mixture: str = "demo-chat:1,identity:2,arithmetic:1"  # a chat dataset reference
    val_mixture: str = ""  # held-out conversations ("": the val split of `mixture`)
    epochs: float = 1.0  # passes over the mixture when max_steps is 0
    warmdown_ratio: float = 0.8  # the learning rate decays to final_lr_frac (0) at the end
    eval_conversations: int = 256  # held-out conversations per validation (over all ranks)
    doc_buffer: int = 64  # conversations the best-fit packer chooses from
    sample_tokens: int = 48


@dataclass
class SftOptions(TrainingOptions):
    """Options of the `sft` stage (continues from `midtrain`, else from `pretrain`)."""

    mixture: str = "identity:4,arithmetic:0.1,demo-chat:0.2"  # a chat dataset reference
    # held-out conversations for the validation loss: all 9 identity ones, 10 arithmetic ones
    val_mixture: str = "identity,arithmetic:0.02"
    epochs: float = 1.0  # passes over the mixture when max_steps is 0
    overflow: str = "drop"  # a conversation longer than the context: "drop" or "truncate"
    device_batch_size: int = 4  # conversations per forward pass, padded to the longest
    warmdown_ratio: float = 1.0  # linear decay to final_lr_frac (0) over the whole stage
    matrix_lr: float = 0.01  # half of pretraining's rates, decaying to zero
    embedding_lr: float = 0.1
    unembedding_lr: float = 0.002
    scalar_lr: float = 0.25
    eval_every: int = 50
    eval_conversations: int = 256  # held-out conversations per validation (over all ranks)
    sample_tokens: int = 48
