"""Log-likelihoods of token sequences under a model: the one scoring path of the multiple-choice
and CORE evaluators and of the lm-evaluation-harness adapter.

* :func:`score_continuations`: for ``(context, continuation)`` id pairs, the summed
  log-probability of the continuation given the context, its length, and whether greedy decoding
  would have produced it. Pairs are batched (right-padded: a causal model's earlier positions do
  not see the padding); a pair longer than the model's window keeps its last ids.
* :func:`next_token_logprobs`: log-probabilities of a few candidate ids (option letters) as the
  next token after each prompt.
* :func:`rolling_pairs`: a whole document as window-sized ``(context, continuation)`` pairs, so
  that the sum of their scores is the document's log-likelihood (perplexity).

All log-probabilities are natural-log, computed in fp32 from the model's logits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nanochat.core.models import Model

Autocast = Callable[[], contextlib.AbstractContextManager[Any]]


@dataclass(frozen=True)
class Scored:
    """The score of one continuation.

    Attributes:
        logprob: sum of the log-probabilities of the continuation's ids (nats).
        tokens: how many ids were scored.
        greedy: every scored id is the model's most likely next id.
    """

    logprob: float
    tokens: int
    greedy: bool

    @property
    def mean(self) -> float:
        """Log-probability per scored id (length-normalised)."""
        return self.logprob / max(1, self.tokens)


def model_window(model: Model) -> int:
    """The most ids one forward pass takes: the model's training context."""
    return int(model.sequence_len)


def _device(model: Model) -> torch.device:
    device: torch.device = next(iter(model.parameters())).device
    return device


def _fit(context: Sequence[int], continuation: Sequence[int], window: int) -> tuple[list[int], int]:
    """``context + continuation`` cut on the left to ``window + 1`` ids, and how many of its
    last ids are the (possibly cut) continuation."""
    ids = [*context, *continuation][-(window + 1) :]
    return ids, min(len(continuation), len(ids) - 1)


@torch.no_grad()
def score_continuations(
    model: Model,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    batch_size: int = 16,
    autocast: Autocast | None = None,
    window: int | None = None,
) -> list[Scored]:
    """Score each continuation given its context, in order.

    Args:
        model: a model of the contract, in eval mode.
        pairs: ``(context ids, continuation ids)``; the context is not empty (start it with
            ``<|bos|>``) and neither is the continuation.
        batch_size: sequences per forward pass.
        autocast: a context manager factory for the forward passes (bf16 on CUDA).
        window: the most ids per forward pass (default: the model's ``sequence_len``).

    Raises:
        ValueError: an empty context or continuation.
    """
    window = window or model_window(model)
    fitted = []
    for context, continuation in pairs:
        if not context or not continuation:
            raise ValueError("a scored pair needs a non-empty context and continuation")
        fitted.append(_fit(context, continuation, window))
    order = sorted(range(len(fitted)), key=lambda i: -len(fitted[i][0]))
    device = _device(model)
    results: list[Scored | None] = [None] * len(fitted)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(fitted[i][0]) for i in chunk) - 1
        inputs = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids = fitted[i][0]
            inputs[row, : len(ids) - 1] = torch.tensor(ids[:-1], dtype=torch.long)
        with autocast() if autocast is not None else contextlib.nullcontext():
            logits = model(inputs.to(device))
        logprobs = F.log_softmax(logits.float(), dim=-1)
        for row, i in enumerate(chunk):
            ids, n = fitted[i]
            targets = torch.tensor(ids[-n:], dtype=torch.long, device=device)
            positions = torch.arange(len(ids) - 1 - n, len(ids) - 1, device=device)
            rows = logprobs[row, positions]
            picked = rows.gather(1, targets[:, None]).squeeze(1)
            greedy = bool((rows.argmax(dim=-1) == targets).all().item())
            results[i] = Scored(float(picked.double().sum().item()), n, greedy)
    return [r for r in results if r is not None]


@torch.no_grad()
def next_token_logprobs(
    model: Model,
    prompts: Sequence[Sequence[int]],
    candidates: Sequence[int],
    *,
    batch_size: int = 16,
    autocast: Autocast | None = None,
    window: int | None = None,
) -> list[list[float]]:
    """For each prompt, the log-probability (over the whole vocabulary) of each candidate id as
    the next token. A prompt longer than the window keeps its last ids."""
    window = window or model_window(model)
    cut = [list(p)[-window:] for p in prompts]
    if any(not p for p in cut):
        raise ValueError("a prompt needs at least one id")
    device = _device(model)
    wanted = torch.tensor(list(candidates), dtype=torch.long, device=device)
    out: list[list[float]] = []
    for start in range(0, len(cut), batch_size):
        chunk = cut[start : start + batch_size]
        width = max(len(p) for p in chunk)
        inputs = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, ids in enumerate(chunk):
            inputs[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        with autocast() if autocast is not None else contextlib.nullcontext():
            logits = model(inputs.to(device))
        last = torch.tensor([len(p) - 1 for p in chunk], device=device)
        rows = F.log_softmax(logits.float()[torch.arange(len(chunk), device=device), last], -1)
        out += rows[:, wanted].double().tolist()
    return out


def rolling_pairs(ids: Sequence[int], bos: int, window: int) -> list[tuple[list[int], list[int]]]:
    """A document as ``(context, continuation)`` pairs whose continuations are disjoint and
    cover every id of ``ids``; each pair fits ``window`` input ids and takes as much of the
    preceding text as context as fits. The first id is predicted from ``<|bos|>`` alone."""
    sequence = [bos, *ids]
    pairs = []
    start = 1
    while start < len(sequence):
        end = min(len(sequence), start + window)
        first = max(0, end - 1 - window)
        pairs.append((sequence[first:start], sequence[start:end]))
        start = end
    return pairs
