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
class PretrainOptions:
    """Options of the `pretrain` stage."""

    dataset: str = "demo-text"  # a text dataset reference
    device_batch_size: int = 8  # rows per forward pass per process
    total_batch_tokens: int = 0  # tokens per optimizer step over all ranks; 0 = one micro-step
    max_steps: int = 0  # 0: from data_param_ratio (or until the time budget)
    data_param_ratio: float = 20.0  # training tokens per parameter, when max_steps is 0
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
    eval_every: int = 100  # validation bits-per-byte every N steps (and at the end)
    eval_tokens: int = 32768  # validation tokens per evaluation (over all ranks)
    sample_every: int = 0  # greedy samples every N steps (0: only at the end)
    sample_tokens: int = 24
    checkpoint_every: int = 100
    keep_checkpoints: int = 2  # newest checkpoints kept (the final one is always kept)
    compile: bool = False  # torch.compile the model (CUDA only)
    doc_buffer: int = 128  # documents the best-fit packer chooses from
    doc_cap: int = 100_000  # characters per document at most
    max_loss: float = 50.0  # a loss above this (or NaN) stops the stage
    seed: int = 0
