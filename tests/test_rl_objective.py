"""The `rl` objective on small hand-made batches: advantages, masks, token-level normalisation,
PPO clipping and the KL penalty (Must-show 2 of issue 14)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from nanochat_stages.policy import (
    pad_sequences,
    rollout_sequence,
    sequence_logprobs,
    token_logprobs,
)
from nanochat_stages.rl_objective import STD_EPS, group_advantages, policy_loss

from nanochat.core.rollouts import Rollout

# ---------------------------------------------------------------- advantages


@pytest.mark.parametrize(
    ("rewards", "std_normalize", "expected"),
    [
        ([[1, 1, 1, 1]], False, [[0, 0, 0, 0]]),  # equal rewards: no signal
        ([[0, 0, 0, 0]], False, [[0, 0, 0, 0]]),
        ([[1, 1, 1, 1]], True, [[0, 0, 0, 0]]),  # std 0 does not blow up
        ([[0.5, 0.5]], True, [[0, 0]]),
        ([[1, 0, 0, 0]], False, [[0.75, -0.25, -0.25, -0.25]]),
        ([[1, 0]], True, [[0.5 / (0.5 + STD_EPS), -0.5 / (0.5 + STD_EPS)]]),
        (
            [[1, 1, 0, 0], [0, 0, 0, 1]],
            False,
            [[0.5, 0.5, -0.5, -0.5], [-0.25, -0.25, -0.25, 0.75]],
        ),
        (
            [[1, 0, 0, 0]],
            True,
            [[0.75 / (math.sqrt(0.1875) + STD_EPS)] + [-0.25 / (math.sqrt(0.1875) + STD_EPS)] * 3],
        ),
    ],
)
def test_group_advantages(rewards, std_normalize: bool, expected) -> None:
    got = group_advantages(torch.tensor(rewards, dtype=torch.float32), std_normalize)
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float32), atol=1e-5), got
    assert torch.allclose(got.sum(dim=1), torch.zeros(len(rewards)), atol=1e-4)


# ---------------------------------------------------------------- masks

PROMPT = [1, 20, 21, 22, 3]  # <|bos|> ... <|assistant_start|>


@pytest.mark.parametrize(
    ("tokens", "forced", "mask"),
    [
        ([30, 31, 4], [False, False, False], [1, 1, 1]),
        # a tool call (python_start 2*3 python_end), then forced output_start 6 output_end
        (
            [5, 40, 41, 6, 7, 42, 8, 43, 4],
            [False, False, False, False, True, True, True, False, False],
            [1, 1, 1, 1, 0, 0, 0, 1, 1],
        ),
        ([7, 8], [True, True], [0, 0]),
        ([], [], []),
    ],
)
def test_rollout_mask_covers_only_sampled_tokens(tokens, forced, mask) -> None:
    rollout = Rollout(tokens, forced, "", "stop", 0.0)
    ids, got = rollout_sequence(PROMPT, rollout)
    assert ids == PROMPT + tokens
    assert got == [0] * len(PROMPT) + mask
    assert rollout.sampled_tokens == sum(mask)


def test_padded_targets_are_minus_one_outside_the_mask() -> None:
    a = rollout_sequence(
        PROMPT, Rollout([30, 7, 42, 8, 4], [False, True, True, True, False], "", "", 0)
    )
    b = rollout_sequence(PROMPT[:3], Rollout([31], [False], "", "", 0))
    batch = pad_sequences([a, b], pad_id=4)
    assert batch.inputs.tolist() == [
        [1, 20, 21, 22, 3, 30, 7, 42, 8],
        [1, 20, 21, 4, 4, 4, 4, 4, 4],
    ]
    # row a predicts: 20 21 22 3 | 30 (sampled) 7 42 8 (forced) 4 (sampled)
    assert batch.targets.tolist() == [
        [-1, -1, -1, -1, 30, -1, -1, -1, 4],
        [-1, -1, 31, -1, -1, -1, -1, -1, -1],
    ]
    assert batch.mask.tolist() == (batch.targets >= 0).float().tolist()
    assert batch.loss_tokens == 3
    with pytest.raises(ValueError, match="mask values"):
        pad_sequences([([1, 2, 3], [0, 1])], 0)


class LogitsPolicy(torch.nn.Module):
    """A 'model' whose logits are a free parameter per (row, position): the gradient of the loss
    with respect to each position's logits shows exactly which positions get a gradient."""

    def __init__(self, rows: int, length: int, vocab: int = 64) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.logits = torch.nn.Parameter(torch.randn(rows, length, vocab, generator=generator))

    def forward(self, idx, targets=None, loss_reduction="mean"):
        logits = self.logits[:, : idx.size(1)]
        if targets is None:
            return logits
        flat = logits.reshape(-1, logits.size(-1))
        return F.cross_entropy(flat, targets.reshape(-1), ignore_index=-1, reduction=loss_reduction)


def _batch_with_tool_output():
    a = rollout_sequence(
        PROMPT,
        Rollout([30, 5, 40, 6, 7, 42, 8, 43, 4], [False] * 4 + [True] * 3 + [False] * 2, "", "", 0),
    )
    b = rollout_sequence(PROMPT, Rollout([31, 32, 4], [False] * 3, "", "", 0))
    return pad_sequences([a, b], pad_id=4)


@pytest.mark.parametrize("advantages", [[1.0, -0.5], [-2.0, 3.0]])
def test_prompt_and_tool_output_get_no_gradient(advantages) -> None:
    batch = _batch_with_tool_output()
    policy = LogitsPolicy(*batch.inputs.shape)
    logp = token_logprobs(policy, batch.inputs, batch.targets)
    assert (logp[batch.mask == 0] == 0).all()  # exactly 0 where no loss is taken
    parts = policy_loss(logp, torch.tensor(advantages), batch.mask, float(batch.loss_tokens))
    parts.loss.backward()
    per_position = policy.logits.grad.abs().sum(dim=-1)  # (B, T)
    assert (per_position[batch.mask == 0] == 0).all(), per_position
    assert (per_position[batch.mask == 1] > 0).all(), per_position
    # the forced <|output_start|> 6 <|output_end|> targets of row 0 sit at positions 8..10
    assert batch.targets[0, 8:11].tolist() == [-1, -1, -1]
    assert (per_position[0, :4] == 0).all()  # the prompt


def test_equal_rewards_give_no_gradient() -> None:
    batch = _batch_with_tool_output()
    policy = LogitsPolicy(*batch.inputs.shape)
    advantages = group_advantages(torch.tensor([[1.0, 1.0]])).reshape(-1)
    logp = token_logprobs(policy, batch.inputs, batch.targets)
    policy_loss(logp, advantages, batch.mask, float(batch.loss_tokens)).loss.backward()
    assert policy.logits.grad.abs().max() == 0


# ---------------------------------------------------------------- token-level normalisation


def test_token_level_normalisation_matches_a_hand_computation() -> None:
    """loss = -sum over sampled tokens of A_i * logp_t / (sampled tokens in the batch); the
    gradient of each sampled token's logp is -A_i / N whatever the length of its sequence."""
    batch = _batch_with_tool_output()  # row 0: 6 sampled tokens, row 1: 3
    n = batch.loss_tokens
    assert n == 9
    logp = torch.log(torch.rand(batch.targets.shape, generator=torch.Generator().manual_seed(1)))
    logp = (logp * batch.mask).requires_grad_(True)
    advantages = torch.tensor([0.5, -1.5])
    parts = policy_loss(logp, advantages, batch.mask, float(n))
    assert parts.loss.item() == pytest.approx(-(0.5 * 6 - 1.5 * 3) / 9)
    parts.loss.backward()
    expected = -advantages[:, None] * batch.mask / n
    assert torch.allclose(logp.grad, expected)
    # per-sequence averaging would weigh row 1's tokens twice as much as row 0's; this does not
    assert logp.grad[0, batch.mask[0] == 1].abs().unique().tolist() == [pytest.approx(0.5 / 9)]
    assert logp.grad[1, batch.mask[1] == 1].abs().unique().tolist() == [pytest.approx(1.5 / 9)]


def test_micro_batches_with_the_global_normaliser_sum_to_the_whole_batch() -> None:
    batch = _batch_with_tool_output()
    advantages = torch.tensor([0.7, -0.3])
    whole = LogitsPolicy(*batch.inputs.shape)
    logp = token_logprobs(whole, batch.inputs, batch.targets)
    policy_loss(logp, advantages, batch.mask, float(batch.loss_tokens)).loss.backward()
    split = LogitsPolicy(*batch.inputs.shape)
    for row in range(2):
        sub = slice(row, row + 1)
        logp = token_logprobs(split, batch.inputs, batch.targets)[sub]
        policy_loss(
            logp, advantages[sub], batch.mask[sub], float(batch.loss_tokens)
        ).loss.backward()
    assert torch.allclose(whole.logits.grad, split.logits.grad, atol=1e-7)


def test_sequence_logprobs_sum_the_masked_tokens() -> None:
    batch = _batch_with_tool_output()
    policy = LogitsPolicy(*batch.inputs.shape)
    per_token = torch.log_softmax(policy.logits[:, : batch.inputs.size(1)].detach(), dim=-1)
    picked = per_token.gather(-1, batch.targets.clamp(min=0)[..., None])[..., 0] * batch.mask
    assert torch.allclose(sequence_logprobs(policy, batch), picked.sum(dim=1).detach(), atol=1e-5)


# ---------------------------------------------------------------- PPO clipping and KL


@pytest.mark.parametrize(
    ("advantage", "ratio", "clipped", "grad_zero"),
    [
        (1.0, 1.5, True, True),  # pushed up too far already: clipped, no gradient
        (1.0, 1.1, False, False),  # inside the range
        (1.0, 0.5, False, False),  # below the range with a positive advantage: keeps learning
        (-1.0, 0.5, True, True),  # pushed down too far already: clipped
        (-1.0, 1.5, False, False),  # above the range with a negative advantage: keeps learning
        (-1.0, 0.9, False, False),
    ],
)
def test_ppo_clipping(advantage: float, ratio: float, clipped: bool, grad_zero: bool) -> None:
    old = torch.tensor([[-1.0]])
    logp = (old + math.log(ratio)).requires_grad_(True)
    mask = torch.ones(1, 1)
    parts = policy_loss(logp, torch.tensor([advantage]), mask, 1.0, old_logp=old, clip=0.2)
    bound = min(max(ratio, 0.8), 1.2)
    expected = max(-advantage * ratio, -advantage * bound)
    assert parts.loss.item() == pytest.approx(expected)
    assert parts.clipped.item() == float(clipped)
    parts.loss.backward()
    assert (logp.grad.abs().item() == 0) == grad_zero


def test_without_old_logprobs_the_ratio_form_is_reinforce() -> None:
    logp = torch.tensor([[-0.3, -2.0]], requires_grad=True)
    parts = policy_loss(logp, torch.tensor([2.0]), torch.ones(1, 2), 2.0)
    assert parts.loss.item() == pytest.approx(-2.0)
    parts.loss.backward()
    assert logp.grad.tolist() == [[-1.0, -1.0]]


def test_kl_penalty_to_the_reference() -> None:
    logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    zero_adv = torch.zeros(1)
    same = policy_loss(logp, zero_adv, mask, 2.0, ref_logp=logp.detach().clone(), kl_coef=0.5)
    assert same.kl_sum.item() == 0 and same.loss.item() == 0
    ref = torch.tensor([[-1.5, -1.0, -9.0]])
    parts = policy_loss(logp, zero_adv, mask, 2.0, ref_logp=ref, kl_coef=0.5)
    d = (ref - logp.detach())[0, :2]
    kl = torch.exp(d) - d - 1
    assert parts.kl_sum.item() == pytest.approx(kl.sum().item())  # the masked token is left out
    assert parts.loss.item() == pytest.approx(0.5 * kl.sum().item() / 2.0)
    parts.loss.backward()
    assert logp.grad[0, 2] == 0 and (logp.grad[0, :2] != 0).all()
    with pytest.raises(ValueError, match="reference"):
        policy_loss(logp, zero_adv, mask, 2.0, kl_coef=0.1)


@pytest.mark.parametrize(
    ("step", "elapsed", "budget", "expected"),
    [
        (10, 999.0, 0.0, 10),  # no budget: the step itself
        (10, 0.0, 100.0, 10),  # the budget has barely started
        (10, 50.0, 100.0, 99),  # half the budget spent: half-way through 200 steps
        (150, 50.0, 100.0, 150),  # ahead of the clock: the step
        (10, 400.0, 100.0, 199),  # over budget: the last step
    ],
)
def test_a_time_budget_moves_the_schedule_on(step, elapsed, budget, expected) -> None:
    """A stage that its time budget will stop still warms its learning rate down to the end."""
    from nanochat_stages.schedule import budget_step, lr_multiplier

    assert budget_step(step, 200, elapsed, budget) == expected
    at_end = budget_step(10, 200, 100.0, 100.0)
    assert lr_multiplier(at_end, 200, 0.0, 0.2, 0.0) == pytest.approx(1 / 40)
