"""What the policy-optimisation stages (`rl`, `dpo`) share: on-policy samples of a problems
set, sequences with a mask of the tokens that carry a loss, and per-token log-probabilities.

A sequence is ``(ids, mask)``: the prompt followed by the response, ``mask[i] = 1`` where id
``i`` is one the model chose (a loss may be taken on it) and 0 for the prompt, for tool output
the engine forced in (``<|output_start|> ... <|output_end|>``) and for padding. A batch of
sequences becomes next-token ``(inputs, targets)`` with ``targets = -1`` wherever the mask of
the predicted id is 0, so :func:`token_logprobs` is 0 there and no gradient reaches it.

Sampling itself lives in the core (:mod:`nanochat.core.rollouts`), shared with the GSM8K
evaluator; :func:`sample_rollouts` wires it to a stage's run (tools, autocast, context).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nanochat.core.engine import SamplingParams
from nanochat.core.rollouts import ProblemRollouts, Rollout, make_engine, sample_problems
from nanochat.core.special_tokens import ASSISTANT_END

__all__ = [
    "PolicyBatch",
    "ProblemRollouts",
    "Rollout",
    "load_tools",
    "pad_id",
    "pad_sequences",
    "rollout_sequence",
    "sample_rollouts",
    "sequence_logprobs",
    "token_logprobs",
]


def load_tools(registry: Any) -> dict[str, Any]:
    """Every installed tool (the calculator among them), by name."""
    from nanochat.core.registry import create_component

    return {r.spec.name: create_component(r) for r in registry.components("tool")}


def sample_rollouts(
    model: Any,
    tokenizer: Any,
    problems: Sequence[Any],
    indices: Sequence[int],
    samples: int,
    params: SamplingParams,
    seed: int,
    tools: dict[str, Any],
    runtime: Any = None,
    slots: int = 64,
    max_len: int | None = None,
) -> list[ProblemRollouts]:
    """``samples`` scored completions of each problem (see :func:`~nanochat.core.rollouts.
    sample_problems`), generated with the model in eval mode and restored to its mode after.

    Args:
        model: the policy (not DDP-wrapped).
        tokenizer: the run's tokenizer.
        problems: problems of a ``problems`` dataset.
        indices: their global indices (seeds derive from them, not from batching or rank).
        samples: completions per problem.
        params: temperature, top-k/top-p and the answer budget.
        seed: base seed.
        tools: tools by name (see :func:`load_tools`).
        runtime: the run's runtime (autocast); None: none.
        slots: rows decoded at once (rounded up to ``samples``).
        max_len: ids per sequence, prompt included (default: the model's ``sequence_len``).
    """
    if not problems:
        return []
    was_training = model.training
    model.eval()
    try:
        engine = make_engine(
            model,
            tokenizer,
            slots=max(samples, min(slots, samples * len(problems))),
            max_len=max_len or int(model.sequence_len),
            tools=tools,
            autocast=runtime.autocast if runtime is not None else None,
        )
        return sample_problems(engine, problems, indices, samples, params, seed)
    finally:
        model.train(was_training)


def rollout_sequence(prompt: Sequence[int], rollout: Rollout) -> tuple[list[int], list[int]]:
    """``(ids, mask)`` of a prompt and one sampled completion: mask 1 on the sampled ids only."""
    ids = [*prompt, *rollout.tokens]
    mask = [0] * len(prompt) + [0 if forced else 1 for forced in rollout.forced]
    return ids, mask


@dataclass
class PolicyBatch:
    """Padded next-token rows of several sequences.

    Attributes:
        inputs: ``(B, T)`` ids (``ids[:-1]`` of each sequence, padded).
        targets: ``(B, T)`` next ids, ``-1`` where no loss is taken (mask 0, padding).
        mask: ``(B, T)`` float, 1.0 where ``targets >= 0``.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor

    def to(self, device: Any) -> PolicyBatch:
        """The batch on ``device``."""
        return PolicyBatch(self.inputs.to(device), self.targets.to(device), self.mask.to(device))

    @property
    def loss_tokens(self) -> int:
        """Targets that carry a loss."""
        return int(self.mask.sum().item())


def pad_sequences(
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int, length: int = 0
) -> PolicyBatch:
    """Pad ``(ids, mask)`` sequences into one :class:`PolicyBatch`.

    Args:
        sequences: ``(ids, mask)`` pairs of equal lengths (at least 2 ids each).
        pad_id: id fed as input in the padding (it is never a target).
        length: pad to at least this many positions (0: the longest sequence).
    """
    width = max([length, *(len(ids) - 1 for ids, _ in sequences)])
    inputs = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    targets = torch.full((len(sequences), width), -1, dtype=torch.long)
    for row, (ids, mask) in enumerate(sequences):
        if len(ids) != len(mask):
            raise ValueError(f"sequence {row}: {len(ids)} ids but {len(mask)} mask values")
        n = len(ids) - 1
        inputs[row, :n] = torch.tensor(ids[:-1], dtype=torch.long)
        wanted = torch.tensor(mask[1:], dtype=torch.bool)
        next_ids = torch.tensor(ids[1:], dtype=torch.long)
        targets[row, :n] = torch.where(wanted, next_ids, torch.full_like(next_ids, -1))
    return PolicyBatch(inputs, targets, (targets >= 0).float())


def token_logprobs(model: Any, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log p(target)`` at every position, ``(B, T)`` fp32; exactly 0 where ``targets`` is -1.

    Uses only the model contract (``model(inputs, targets, loss_reduction="none")`` is the
    per-position cross-entropy), so gradients flow when called with grad enabled.
    """
    loss = model(inputs, targets, loss_reduction="none")
    return -loss.float().view(targets.shape)


def sequence_logprobs(model: Any, batch: PolicyBatch) -> torch.Tensor:
    """Summed log-probability of each row's loss-carrying targets, ``(B,)`` fp32."""
    return (token_logprobs(model, batch.inputs, batch.targets) * batch.mask).sum(dim=1)


def pad_id(tokenizer: Any) -> int:
    """The id used as padding input (``<|assistant_end|>``; it is never a target there)."""
    return int(tokenizer.special_tokens[ASSISTANT_END])
