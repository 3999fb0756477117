"""The objective of the `rl` stage: group-relative advantages and a token-level policy loss.

For a prompt with ``k`` samples of rewards ``r_1..r_k``, sample ``i``'s advantage is
``A_i = r_i - mean(r)``, optionally divided by ``std(r) + eps`` (the population standard
deviation; a group of equal rewards has advantage 0 either way, so it teaches nothing).

Every *sampled* token ``t`` of sample ``i`` (prompt, forced tool output and padding are masked
out, see :mod:`nanochat_stages.policy`) contributes

* ``-A_i * rho_t`` with ``rho_t = exp(logp_t - old_logp_t)``; with clipping on (``clip > 0``,
  PPO) ``max(-A_i rho_t, -A_i clamp(rho_t, 1 - clip, 1 + clip))``. Without old log-probs
  (one update per batch, no clipping) ``old_logp`` is ``logp`` detached: the value is ``-A_i``
  and the gradient is exactly ``-A_i grad logp_t`` (REINFORCE);
* with ``kl_coef > 0``, ``kl_coef * (exp(d) - d - 1)`` with ``d = ref_logp_t - logp_t``, an
  unbiased, non-negative estimate of KL(policy || reference) at that token.

**Token-level normalisation**: the loss is the *sum* of these terms over every sampled token of
every sample in the global batch, divided by the number of sampled tokens in the global batch
(all prompts, all samples, all ranks). Each sampled token weighs the same, so a long answer
counts in proportion to its length (not once per sequence as in per-sequence averaging).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

STD_EPS = 1e-6


def group_advantages(rewards: torch.Tensor, std_normalize: bool = False) -> torch.Tensor:
    """Advantages of ``rewards`` ``(groups, k)``: reward minus its group's mean, optionally
    divided by the group's (population) standard deviation plus ``STD_EPS``."""
    rewards = rewards.float()
    advantages = rewards - rewards.mean(dim=1, keepdim=True)
    if std_normalize:
        advantages = advantages / (rewards.std(dim=1, unbiased=False, keepdim=True) + STD_EPS)
    return advantages


@dataclass
class LossParts:
    """Sums over the sampled tokens of a micro-batch (divide by the token count for means).

    Attributes:
        loss: the micro-batch's share of the global loss (already divided by the normaliser).
        kl_sum: summed per-token KL estimates (0 when the KL term is off).
        clipped: how many tokens had their ratio clipped (0 when clipping is off).
    """

    loss: torch.Tensor
    kl_sum: torch.Tensor
    clipped: torch.Tensor


def policy_loss(
    logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    normaliser: float,
    old_logp: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    clip: float = 0.0,
    kl_coef: float = 0.0,
) -> LossParts:
    """The token-level policy-gradient loss of one micro-batch (see the module docstring).

    Args:
        logp: ``(B, T)`` log-probabilities of the targets under the current policy (with grad).
        advantages: ``(B,)`` advantage of each row's sample.
        mask: ``(B, T)`` 1.0 on sampled tokens, 0.0 elsewhere.
        normaliser: sampled tokens in the whole global batch (> 0).
        old_logp: ``(B, T)`` log-probs when the batch was sampled (None: ``logp`` detached).
        ref_logp: ``(B, T)`` log-probs under the reference (starting) policy; needed when
            ``kl_coef > 0``.
        clip: PPO clip range epsilon; 0 turns clipping off.
        kl_coef: weight of the KL penalty; 0 turns it off.

    Returns:
        The loss (to backpropagate) and the KL and clipping sums for metrics.
    """
    old = logp.detach() if old_logp is None else old_logp
    ratio = torch.exp(logp - old)
    adv = advantages.to(logp.dtype)[:, None]
    per_token = -adv * ratio
    clipped = torch.zeros((), device=logp.device)
    if clip > 0:
        bounded = -adv * ratio.clamp(1.0 - clip, 1.0 + clip)
        clipped = ((bounded > per_token).float() * mask).sum().detach()
        per_token = torch.maximum(per_token, bounded)
    kl_sum = torch.zeros((), device=logp.device)
    if kl_coef > 0:
        if ref_logp is None:
            raise ValueError("kl_coef > 0 needs the reference log-probs")
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1.0
        kl_sum = (kl * mask).sum().detach()
        per_token = per_token + kl_coef * kl
    loss = (per_token * mask).sum() / normaliser
    return LossParts(loss, kl_sum, clipped)
