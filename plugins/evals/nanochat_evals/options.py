"""Options of the built-in evaluators (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass

from nanochat.core.config import option


@dataclass
class BpbOptions:
    """Options of the `bpb` evaluator.

    Attributes:
        dataset: a text dataset reference to measure bits per byte on.
        split: the split of that dataset.
        tokens: target tokens evaluated over all ranks.
        device_batch_size: rows per forward pass per process.
    """

    dataset: str = "demo-text"
    split: str = option("val", choices=("train", "val"))
    tokens: int = option(65536, ge=1)
    device_batch_size: int = option(8, ge=1)


@dataclass
class Gsm8kEvalOptions:
    """Options of the `gsm8k` evaluator.

    Attributes:
        dataset: any problems dataset (``gsm8k``; ``arithmetic`` for CPU-sized runs).
        split: the split to score; ``val`` falls back to ``test`` (gsm8k's test split ships
            with the package, so it works offline).
        limit: score the first N problems of the split; 0: all of them.
        samples: completions per problem; accuracy is pass@k over them (k > 1 needs a
            temperature above 0).
        temperature: sampling temperature; 0 is greedy.
        top_k: sample among the k most likely ids; 0: off.
        max_new_tokens: most tokens per answer (also cut to the model's context).
        slots: sequences decoded at once per process.
        seed: sampling seed.
    """

    dataset: str = "gsm8k"
    split: str = option("val", choices=("val", "test", "train"))
    limit: int = option(0, ge=0)
    samples: int = option(1, ge=1, le=1024)
    temperature: float = option(0.0, ge=0)
    top_k: int = option(0, ge=0)
    max_new_tokens: int = option(256, ge=1)
    slots: int = option(32, ge=1, le=65536)
    seed: int = option(0, ge=0)


@dataclass
class ChoicesEvalOptions:
    """Options of the multiple-choice evaluators (`choices`, `mmlu`, `arc-easy`, ...).

    Attributes:
        dataset: any ``choices`` dataset (``mmlu``, ``arc-easy``, ``arc-challenge``,
            ``hellaswag``).
        split: the split to score (``val`` falls back to ``test``).
        method: ``letters`` (chat models: the question with lettered options, the model's
            next-token log-probabilities of the letters), ``continuation`` (base models: each
            option's log-likelihood as a continuation, per token), or ``auto`` (letters for a
            chat stage's checkpoint, continuation otherwise).
        limit: score N questions (after ``subjects``), a fixed sample (seed 1337) kept in
            stored order - stored order is often by subject; 0: all of them.
        subjects: comma-separated subjects to keep (e.g. ``anatomy,virology``); empty: all.
        batch_size: sequences per forward pass.
    """

    dataset: str = "mmlu"
    split: str = option("val", choices=("val", "test", "train"))
    method: str = option("auto", choices=("auto", "letters", "continuation"))
    limit: int = option(0, ge=0)
    subjects: str = ""
    batch_size: int = option(16, ge=1, le=65536)


@dataclass
class MmluEvalOptions(ChoicesEvalOptions):
    """Options of the `mmlu` evaluator (see :class:`ChoicesEvalOptions`)."""

    dataset: str = "mmlu"
    split: str = option("test", choices=("val", "test", "train"))


@dataclass
class ArcEasyEvalOptions(ChoicesEvalOptions):
    """Options of the `arc-easy` evaluator (see :class:`ChoicesEvalOptions`)."""

    dataset: str = "arc-easy"
    split: str = option("test", choices=("val", "test", "train"))


@dataclass
class ArcChallengeEvalOptions(ChoicesEvalOptions):
    """Options of the `arc-challenge` evaluator (see :class:`ChoicesEvalOptions`)."""

    dataset: str = "arc-challenge"
    split: str = option("test", choices=("val", "test", "train"))


@dataclass
class HellaswagEvalOptions(ChoicesEvalOptions):
    """Options of the `hellaswag` evaluator (see :class:`ChoicesEvalOptions`)."""

    dataset: str = "hellaswag"


@dataclass
class CoreEvalOptions:
    """Options of the `core` evaluator (DCLM's CORE metric).

    Attributes:
        bundle: the unpacked ``eval_bundle`` folder (``core.yaml``, ``eval_meta_data.csv``,
            ``eval_data/``); empty: ``$NANOCHAT_HOME/data/eval_bundle`` (fetch it with
            ``nanochat data download core-bundle``).
        limit: score the first N examples of each task (after the fixed shuffle); 0: all.
        tasks: comma-separated task labels to score; empty: every task of ``core.yaml``.
        batch_size: sequences per forward pass.
    """

    bundle: str = ""
    limit: int = option(0, ge=0)
    tasks: str = ""
    batch_size: int = option(16, ge=1, le=65536)
