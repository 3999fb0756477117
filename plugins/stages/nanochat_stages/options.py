"""Options of the built-in stages (no heavy imports: the CLI lists them without torch).

Every field declares its allowed values with :func:`nanochat.core.config.option`; they are
checked before a run writes anything, and ``nanochat show stage NAME`` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass

from nanochat.core.config import option
from nanochat.core.special_tokens import SPECIAL_TOKENS

#: The smallest vocabulary a tokenizer can have: the 256 bytes and the special tokens.
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
#: The largest vocabulary any built-in tokenizer trains (nanochat_rustbpe.MAX_VOCAB_SIZE).
MAX_VOCAB_SIZE = 2**24


@dataclass
class TokenizerStageOptions:
    """Options of the `tokenizer` stage.

    Attributes:
        dataset: a text dataset reference to train on.
        vocab_size: ids in total, special tokens included.
        max_chars: character budget of training text.
        doc_cap: each document is cut to at most this many characters.
        eval_chars: held-out characters for the bytes/token measurement.
        seed: seed of the order the training documents are read in.
    """

    dataset: str = "demo-text"
    vocab_size: int = option(32768, ge=MIN_VOCAB_SIZE, le=MAX_VOCAB_SIZE)
    max_chars: int = option(2_000_000_000, ge=1)
    doc_cap: int = option(10_000, ge=1)
    eval_chars: int = option(2_000_000, ge=1)
    seed: int = option(0, ge=0)


@dataclass
class TrainingOptions:
    """Options every training stage shares (batch, schedule, optimizer, cadence).

    Attributes:
        device_batch_size: rows per forward pass per process.
        total_batch_tokens: tokens per optimizer step over all ranks (a multiple of
            device_batch_size x sequence_len x world_size); 0: one micro-step.
        max_steps: optimizer steps; 0: derived from the data (see each stage).
        time_budget_s: stop after this many seconds of training; 0: no budget.
        warmup_ratio: share of the steps over which the learning rate warms up from 0.
        warmdown_ratio: share of the steps at the end over which it decays to final_lr_frac.
        final_lr_frac: the learning rate at the end, as a fraction of the peak.
        matrix_lr: peak learning rate of the matrix parameters (Muon).
        embedding_lr: peak learning rate of the token embedding (AdamW).
        unembedding_lr: peak learning rate of the output head (AdamW).
        scalar_lr: peak learning rate of scalar parameters (AdamW).
        weight_decay: weight decay of the matrix parameters.
        grad_clip: clip the gradient norm to this; 0 disables clipping.
        eval_every: validation every N steps (and at the end).
        sample_every: samples every N steps; 0: only at the end.
        sample_tokens: tokens generated per sample; 0 turns the samples off.
        checkpoint_every: a checkpoint every N steps (and at the end).
        keep_checkpoints: newest checkpoints kept (the final one is always kept).
        compile: torch.compile the model (CUDA only).
        max_loss: a loss above this (or NaN) stops the stage.
        seed: seed of the model initialisation and the data order.
    """

    device_batch_size: int = option(8, ge=1, le=65536)
    total_batch_tokens: int = option(0, ge=0)
    max_steps: int = option(0, ge=0)
    time_budget_s: float = option(0.0, ge=0)
    warmup_ratio: float = option(0.0, ge=0, le=1)
    warmdown_ratio: float = option(0.2, ge=0, le=1)
    final_lr_frac: float = option(0.0, ge=0, le=1)
    matrix_lr: float = option(0.02, ge=0)
    embedding_lr: float = option(0.2, ge=0)
    unembedding_lr: float = option(0.004, ge=0)
    scalar_lr: float = option(0.5, ge=0)
    weight_decay: float = option(0.0, ge=0)
    grad_clip: float = option(1.0, ge=0)
    eval_every: int = option(100, ge=1)
    sample_every: int = option(0, ge=0)
    sample_tokens: int = option(24, ge=0)
    checkpoint_every: int = option(100, ge=1)
    keep_checkpoints: int = option(2, ge=1)
    compile: bool = False
    max_loss: float = option(50.0, gt=0)
    seed: int = option(0, ge=0)


@dataclass
class PretrainOptions(TrainingOptions):
    """Options of the `pretrain` stage.

    Attributes:
        dataset: a text dataset reference to train on.
        data_param_ratio: training tokens per parameter, when max_steps is 0 (then it must be
            positive).
        eval_tokens: validation tokens per evaluation (over all ranks).
        doc_buffer: documents the best-fit packer chooses from.
        doc_cap: characters per document at most.
    """

    dataset: str = "demo-text"
    data_param_ratio: float = option(20.0, ge=0)
    eval_tokens: int = option(32768, ge=1)
    doc_buffer: int = option(128, ge=1)
    doc_cap: int = option(100_000, ge=1)


@dataclass
class MidtrainOptions(TrainingOptions):
    """Options of the `midtrain` stage (continues from the newest `pretrain` checkpoint).

    Online the reference recipe is ``smoltalk:1,gsm8k:4,identity:2,arithmetic:1`` (gsm8k's
    train split needs the hub); the default stays offline so that it always runs.

    Attributes:
        mixture: a chat dataset reference (a mixture of ``name:EPOCHS`` terms) to train on.
        val_mixture: held-out conversations; empty: the val split of mixture.
        epochs: passes over the mixture when max_steps is 0 (then it must be positive).
        warmdown_ratio: the learning rate decays to final_lr_frac (0) over this share at the end.
        eval_conversations: held-out conversations per validation (over all ranks).
        doc_buffer: conversations the best-fit packer chooses from.
        sample_tokens: tokens generated per sample; 0 turns the samples off.
    """

    mixture: str = "demo-chat:1,identity:2,arithmetic:1"
    val_mixture: str = ""
    epochs: float = option(1.0, ge=0)
    warmdown_ratio: float = option(0.8, ge=0, le=1)
    eval_conversations: int = option(256, ge=1)
    doc_buffer: int = option(64, ge=1)
    sample_tokens: int = option(48, ge=0)


@dataclass
class SftOptions(TrainingOptions):
    """Options of the `sft` stage (continues from `midtrain`, else from `pretrain`).

    The default val_mixture holds all 9 identity conversations and 10 arithmetic ones.

    Attributes:
        mixture: a chat dataset reference (a mixture of ``name:EPOCHS`` terms) to train on.
        val_mixture: held-out conversations for the validation loss.
        epochs: passes over the mixture when max_steps is 0 (then it must be positive).
        overflow: a conversation longer than the context is dropped or truncated.
        device_batch_size: conversations per forward pass, padded to the longest.
        warmdown_ratio: linear decay to final_lr_frac (0) over this share of the stage.
        matrix_lr: peak learning rate of the matrix parameters (half of pretraining's).
        embedding_lr: peak learning rate of the token embedding.
        unembedding_lr: peak learning rate of the output head.
        scalar_lr: peak learning rate of scalar parameters.
        eval_every: validation every N steps (and at the end).
        eval_conversations: held-out conversations per validation (over all ranks).
        sample_tokens: tokens generated per sample; 0 turns the samples off.
    """

    mixture: str = "identity:4,arithmetic:0.1,demo-chat:0.2"
    val_mixture: str = "identity,arithmetic:0.02"
    epochs: float = option(1.0, ge=0)
    overflow: str = option("drop", choices=("drop", "truncate"))
    device_batch_size: int = option(4, ge=1, le=65536)
    warmdown_ratio: float = option(1.0, ge=0, le=1)
    matrix_lr: float = option(0.01, ge=0)
    embedding_lr: float = option(0.1, ge=0)
    unembedding_lr: float = option(0.002, ge=0)
    scalar_lr: float = option(0.25, ge=0)
    eval_every: int = option(50, ge=1)
    eval_conversations: int = option(256, ge=1)
    sample_tokens: int = option(48, ge=0)


@dataclass
class RlOptions:
    """Options of the `rl` stage (continues from the newest chat checkpoint of the run).

    Attributes:
        source: the stage to start from (a name or unique prefix, e.g. sft); empty: the
            newest chat checkpoint of the run.
        dataset: a problems dataset reference (``arithmetic`` offline; ``gsm8k`` needs its
            train split from the hub or a local copy).
        eval_split: the held-out split for pass@1 (``val``; a dataset without one uses test).
        prompts_per_step: problems per optimizer step, over all ranks.
        samples: completions sampled per problem (the group of the advantage).
        max_new_tokens: most tokens per completion (also cut to the context).
        temperature: sampling temperature of the training samples.
        top_k: sample among the k most likely ids; 0: off.
        std_normalize: divide advantages by the group's standard deviation.
        kl_coef: weight of a KL penalty to the starting policy; 0: off.
        clip_ratio: PPO clip range of the probability ratio; 0: off.
        updates_per_batch: optimizer steps on each batch of samples (PPO epochs).
        epochs: passes over the train split when max_steps is 0.
        max_steps: optimizer steps; 0: from epochs.
        time_budget_s: stop after this many seconds of training (the learning-rate schedule
            then follows the share of the budget spent, so it still warms down); 0: no budget.
        device_batch_size: sequences per forward/backward pass per process.
        sample_slots: sequences decoded at once per process.
        warmup_ratio: share of the steps over which the learning rate warms up from 0.
        warmdown_ratio: share of the steps at the end over which it decays to final_lr_frac.
        final_lr_frac: the learning rate at the end, as a fraction of the peak.
        matrix_lr: peak learning rate of the matrix parameters (Muon).
        embedding_lr: peak learning rate of the token embedding.
        unembedding_lr: peak learning rate of the output head.
        scalar_lr: peak learning rate of scalar parameters.
        weight_decay: weight decay of the matrix parameters.
        grad_clip: clip the gradient norm to this; 0 disables clipping.
        eval_every: held-out pass@1 every N steps (and at the start and the end).
        eval_problems: held-out problems per evaluation (over all ranks).
        eval_temperature: temperature of the held-out samples (0: greedy).
        checkpoint_every: a checkpoint every N steps (and at the end).
        keep_checkpoints: newest checkpoints kept.
        compile: torch.compile the model for the loss passes (CUDA only).
        seed: seed of the problem order and of the samples.
    """

    source: str = ""
    dataset: str = "arithmetic"
    eval_split: str = option("val", choices=("val", "test", "train"))
    prompts_per_step: int = option(16, ge=1, le=65536)
    samples: int = option(8, ge=1, le=1024)
    max_new_tokens: int = option(256, ge=1)
    temperature: float = option(1.0, gt=0)
    top_k: int = option(0, ge=0)
    std_normalize: bool = False
    kl_coef: float = option(0.0, ge=0)
    clip_ratio: float = option(0.0, ge=0, lt=1)
    updates_per_batch: int = option(1, ge=1, le=64)
    epochs: float = option(1.0, ge=0)
    max_steps: int = option(0, ge=0)
    time_budget_s: float = option(0.0, ge=0)
    device_batch_size: int = option(32, ge=1, le=65536)
    sample_slots: int = option(64, ge=1, le=65536)
    warmup_ratio: float = option(0.0, ge=0, le=1)
    warmdown_ratio: float = option(1.0, ge=0, le=1)
    final_lr_frac: float = option(0.0, ge=0, le=1)
    matrix_lr: float = option(0.001, ge=0)
    embedding_lr: float = option(0.01, ge=0)
    unembedding_lr: float = option(0.0002, ge=0)
    scalar_lr: float = option(0.025, ge=0)
    weight_decay: float = option(0.0, ge=0)
    grad_clip: float = option(1.0, ge=0)
    eval_every: int = option(50, ge=1)
    eval_problems: int = option(256, ge=1)
    eval_temperature: float = option(0.0, ge=0)
    checkpoint_every: int = option(50, ge=1)
    keep_checkpoints: int = option(2, ge=1)
    compile: bool = False
    seed: int = option(0, ge=0)


@dataclass
class DpoOptions(TrainingOptions):
    """Options of the `dpo` stage (continues from the run's newest chat checkpoint).

    With a ``problems`` dataset the pairs are built on-policy before training: the starting
    model samples ``samples`` completions of each of ``prompts`` train problems; a problem with
    a correct and a wrong one gives a pair (saved as ``pairs.jsonl`` in the stage's folder).
    With a ``preferences`` dataset its pairs are used as they are.

    Attributes:
        source: the stage to continue from (and to use as the frozen reference); empty: the
            newest chat checkpoint of the run.
        dataset: a ``preferences`` dataset, or a ``problems`` dataset for on-policy pairs.
        beta: strength of the implicit KL constraint to the reference.
        nll_coef: weight of the chosen reply's mean negative log-likelihood per token added to
            each pair's loss (as in iterative reasoning preference optimisation: without it
            the chosen answers lose likelihood too and a small model's accuracy collapses);
            0: plain DPO.
        device_batch_size: pairs per forward pass per process (each pair is two rows).
        total_batch_tokens: unused: dpo counts its batch in pairs (total_batch_pairs); keep 0.
        total_batch_pairs: pairs per optimizer step over all ranks (a multiple of
            device_batch_size x world_size); 0: one micro-step.
        epochs: passes over the pairs when max_steps is 0 (then it must be positive).
        overflow: a pair longer than the context is dropped, or its replies truncated.
        prompts: on-policy: train problems sampled.
        samples: on-policy: completions sampled per problem (k).
        temperature: on-policy: sampling temperature.
        top_k: on-policy: sample from the k most likely ids (0: all).
        max_new_tokens: on-policy: tokens per completion at most.
        sample_slots: sequences decoded at once per process (on-policy samples, pass@1).
        pairs_per_prompt: on-policy: pairs per problem at most (wrong sample i against correct
            sample i, the correct ones reused in turn when fewer).
        eval_pairs: held-out pairs (val split of a preferences dataset) per validation.
        eval_problems: held-out problems (val split of a problems dataset) for greedy pass@1.
        warmdown_ratio: linear decay to final_lr_frac (0) over this share of the stage.
        matrix_lr: peak learning rate of the matrix parameters.
        embedding_lr: peak learning rate of the token embedding.
        unembedding_lr: peak learning rate of the output head.
        scalar_lr: peak learning rate of scalar parameters.
        eval_every: validation every N steps (and at the start and the end).
        checkpoint_every: a checkpoint every N steps (and at the end).
        sample_tokens: tokens generated per sample; 0 turns the samples off.
        seed: seed of the pair order and of the on-policy samples.
    """

    source: str = ""
    dataset: str = "arithmetic"
    beta: float = option(0.1, gt=0)
    nll_coef: float = option(1.0, ge=0)
    device_batch_size: int = option(4, ge=1, le=65536)
    total_batch_tokens: int = option(0, ge=0)
    total_batch_pairs: int = option(0, ge=0)
    epochs: float = option(1.0, ge=0)
    overflow: str = option("drop", choices=("drop", "truncate"))
    prompts: int = option(256, ge=1)
    samples: int = option(8, ge=2, le=1024)
    temperature: float = option(1.0, gt=0)
    top_k: int = option(0, ge=0)
    max_new_tokens: int = option(128, ge=1)
    sample_slots: int = option(64, ge=1, le=65536)
    pairs_per_prompt: int = option(1, ge=1)
    eval_pairs: int = option(128, ge=0)
    eval_problems: int = option(100, ge=0)
    warmdown_ratio: float = option(1.0, ge=0, le=1)
    matrix_lr: float = option(0.002, ge=0)
    embedding_lr: float = option(0.02, ge=0)
    unembedding_lr: float = option(0.0004, ge=0)
    scalar_lr: float = option(0.05, ge=0)
    eval_every: int = option(50, ge=1)
    checkpoint_every: int = option(50, ge=1)
    sample_tokens: int = option(64, ge=0)
    seed: int = option(0, ge=0)
