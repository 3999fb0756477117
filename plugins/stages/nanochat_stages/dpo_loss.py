"""The DPO objective (Rafailov et al., 2023) on summed response log-probabilities.

For a prompt ``x`` with a chosen reply ``y_w`` and a rejected reply ``y_l``, the policy
``pi`` and the frozen reference ``ref``::

    r_w = beta * (log pi(y_w | x) - log ref(y_w | x))      # the chosen reply's implicit reward
    r_l = beta * (log pi(y_l | x) - log ref(y_l | x))      # the rejected reply's
    loss = -log sigmoid(r_w - r_l)

Each log-probability is the sum over the reply's own tokens only (the prompt, tool output the
engine forced in, and padding carry none). With the policy equal to the reference every reward
is 0 and the loss is ``log 2``; the gradient with respect to ``log pi(y_w | x)`` is
``-beta * sigmoid(r_l - r_w)`` (and the opposite for ``y_l``), which vanishes once the chosen
reply wins by a wide margin.

:func:`pair_sums` computes those log-probabilities for a batch of pairs with a policy and a
reference model (through the model contract only) and adds the optional NLL term of the
chosen replies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nanochat_stages.policy import token_logprobs


@dataclass
class DpoTerms:
    """The per-pair quantities of one batch (each a ``(pairs,)`` tensor).

    Attributes:
        losses: ``-log sigmoid(r_w - r_l)`` of each pair.
        chosen_rewards: ``r_w`` (detached).
        rejected_rewards: ``r_l`` (detached).
    """

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    @property
    def margins(self) -> torch.Tensor:
        """``r_w - r_l`` of each pair."""
        return self.chosen_rewards - self.rejected_rewards

    @property
    def correct(self) -> torch.Tensor:
        """1.0 where the chosen reply's reward is strictly higher (a tie counts as wrong)."""
        return (self.chosen_rewards > self.rejected_rewards).float()


def _wide(values: torch.Tensor) -> torch.Tensor:
    """``values`` in at least fp32 (bf16 log-probabilities are widened; fp64 is kept)."""
    return values.to(torch.promote_types(values.dtype, torch.float32))


def dpo_terms(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> DpoTerms:
    """The DPO loss and implicit rewards of each pair.

    Args:
        policy_chosen: ``log pi(y_w | x)`` of each pair (with gradient).
        policy_rejected: ``log pi(y_l | x)``.
        reference_chosen: ``log ref(y_w | x)`` (no gradient is taken through it).
        reference_rejected: ``log ref(y_l | x)``.
        beta: the strength of the implicit KL constraint (> 0).

    Returns:
        The :class:`DpoTerms`; ``losses.mean()`` is the batch loss.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, not {beta}")
    chosen = beta * (_wide(policy_chosen) - _wide(reference_chosen.detach()))
    rejected = beta * (_wide(policy_rejected) - _wide(reference_rejected.detach()))
    losses = -F.logsigmoid(chosen - rejected)
    return DpoTerms(losses, chosen.detach(), rejected.detach())


#: The per-pair metrics :func:`pair_sums` sums, in order.
STATS = (
    "loss",
    "dpo_loss",
    "chosen_nll",
    "reward_accuracy",
    "reward_margin",
    "chosen_reward",
    "rejected_reward",
    "chosen_logp",
    "rejected_logp",
)


def sequence_logps(model: Any, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each row's summed log-probability of its loss-carrying targets, ``(rows,)`` fp32."""
    return token_logprobs(model, inputs, targets).sum(dim=1)


def pair_sums(
    policy: Any,
    reference: Any,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    beta: float,
    nll_coef: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed loss of a batch of ``rows`` pairs (``2 x rows`` rows, chosen first) and the
    sums of its metrics in :data:`STATS` order (detached).

    Each pair's loss is its DPO loss plus ``nll_coef`` times the chosen reply's mean negative
    log-likelihood per token (the NLL term of iterative reasoning preference optimisation,
    which keeps the correct answers likely while the margin grows; 0: plain DPO).
    """
    rows = inputs.size(0) // 2
    with torch.no_grad():
        reference_logps = sequence_logps(reference, inputs, targets)
    policy_logps = sequence_logps(policy, inputs, targets)
    terms = dpo_terms(
        policy_logps[:rows],
        policy_logps[rows:],
        reference_logps[:rows],
        reference_logps[rows:],
        beta,
    )
    lengths = (targets[:rows] >= 0).sum(dim=1).clamp(min=1)
    nll = -policy_logps[:rows] / lengths
    losses = terms.losses + nll_coef * nll if nll_coef else terms.losses
    detached = policy_logps.detach()
    stats = torch.stack(
        [
            losses.detach().sum(),
            terms.losses.detach().sum(),
            nll.detach().sum(),
            terms.correct.sum(),
            terms.margins.sum(),
            terms.chosen_rewards.sum(),
            terms.rejected_rewards.sum(),
            detached[:rows].sum(),
            detached[rows:].sum(),
        ]
    )
    return losses.sum(), stats


def stat_means(sums: torch.Tensor, pairs: float) -> dict[str, float]:
    """Each of :data:`STATS` summed over ``pairs`` pairs, as a mean per pair."""
    return {k: float(v) / max(1.0, pairs) for k, v in zip(STATS, sums.tolist(), strict=True)}
