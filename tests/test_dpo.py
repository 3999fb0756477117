"""The `dpo` stage: the loss against hand computations, reply-only masks, pairs (offline and
on-policy), learning preferences on a tiny model, exact resume, and 2 ranks = 1 rank."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import (
    TEST_PLUGINS,
    copy_run,
    install_package,
    kill_when_checkpointed,
    run_cli,
    run_torchrun,
)
from nanochat_datasets.options import LocalFileOptions
from nanochat_stages.dpo_data import (
    Pair,
    PairBatches,
    PairList,
    completion_message,
    load_pairs,
    pairs_from_rollouts,
    render_pair,
    save_pairs,
)
from nanochat_stages.dpo_loss import STATS, dpo_terms, pair_sums, sequence_logps
from nanochat_stages.policy import pad_sequences
from safetensors.torch import load_file
from test_conversation import AE, AS, BOS, OE, OS, PE, PS, UE, US, CharTokenizer, chars

from nanochat.core.data import Preference, Problem
from nanochat.core.data_refs import open_dataset
from nanochat.core.registry import Registry
from nanochat.core.rollouts import ProblemRollouts, Rollout
from nanochat.plugins.gpt.factory import GPTFactory
from nanochat.plugins.gpt.options import GPTOptions

LOG2 = math.log(2.0)

# ---------------------------------------------------------------- the loss (Must-show 1)

# (policy chosen, policy rejected, reference chosen, reference rejected, beta,
#  loss, d loss / d policy chosen), worked by hand:
#  z = beta * ((pc - rc) - (pr - rr)); loss = log(1 + e^-z); d/d pc = -beta * sigmoid(-z)
HAND = [
    # z = 0.1 * ((-10 + 11) - (-12 + 11)) = 0.2; log(1 + e^-0.2) = 0.598139;
    # sigmoid(-0.2) = 0.450166 -> -0.0450166
    (-10.0, -12.0, -11.0, -11.0, 0.1, 0.5981389, -0.04501660),
    # z = 0: log 2 and -beta / 2
    (-5.0, -5.0, -5.0, -5.0, 0.5, 0.6931472, -0.25),
    # z = 0.5 * ((-3 + 6) - (-9 + 4)) = 4; log(1 + e^-4) = 0.0181499; 0.5 * 0.0179862
    (-3.0, -9.0, -6.0, -4.0, 0.5, 0.01814993, -0.008993105),
    # z = 1 * ((-20 + 10) - (-2 + 10)) = -18: the rejected reply wins, loss ~ 18, grad ~ -1
    (-20.0, -2.0, -10.0, -10.0, 1.0, 18.0, -1.0),
]


@pytest.mark.parametrize(("pc", "pr", "rc", "rr", "beta", "loss", "grad"), HAND)
def test_loss_and_gradients_match_hand_computation(pc, pr, rc, rr, beta, loss, grad) -> None:
    policy = torch.tensor([pc, pr], dtype=torch.float64, requires_grad=True)
    reference = torch.tensor([rc, rr], dtype=torch.float64, requires_grad=True)
    terms = dpo_terms(policy[:1], policy[1:], reference[:1], reference[1:], beta)
    terms.losses.sum().backward()
    assert terms.losses.item() == pytest.approx(loss, rel=1e-6)
    assert policy.grad[0].item() == pytest.approx(grad, rel=1e-6)
    assert policy.grad[1].item() == pytest.approx(-grad, rel=1e-6)  # opposite for the rejected
    assert reference.grad is None  # the reference is frozen
    assert terms.chosen_rewards.item() == pytest.approx(beta * (pc - rc))
    assert terms.rejected_rewards.item() == pytest.approx(beta * (pr - rr))
    assert terms.margins.item() == pytest.approx(beta * ((pc - rc) - (pr - rr)))


def test_a_pair_won_by_a_wide_margin_gives_near_zero_loss_and_gradient() -> None:
    policy = torch.tensor([0.0, -100.0], requires_grad=True)  # z = 1 * (0 - (-100)) = 100
    zeros = torch.zeros(2)
    terms = dpo_terms(policy[:1], policy[1:], zeros[:1], zeros[1:], 1.0)
    terms.losses.sum().backward()
    assert 0.0 <= terms.losses.item() < 1e-30
    assert policy.grad.abs().max().item() < 1e-30
    assert terms.correct.item() == 1.0


def test_loss_is_log2_when_the_policy_is_the_reference() -> None:
    logps = -torch.rand(2, 16, dtype=torch.float64) * 50
    terms = dpo_terms(logps[0], logps[1], logps[0].clone(), logps[1].clone(), 0.3)
    assert torch.allclose(terms.losses, torch.full((16,), LOG2, dtype=torch.float64))
    assert terms.correct.sum().item() == 0  # ties are not counted as won
    assert terms.margins.abs().max().item() == 0.0
    with pytest.raises(ValueError, match="beta"):
        dpo_terms(logps[0], logps[1], logps[0], logps[1], 0.0)


# ---------------------------------------------------------------- pairs and their masks


class DecodingCharTokenizer(CharTokenizer):
    """The test's one-id-per-character tokenizer, able to decode (specials by name)."""

    def decode(self, ids: list[int]) -> str:
        names = {i: name for name, i in self.special_tokens.items()}
        return "".join(names[i] if i in names else chr(i - 100) for i in ids)

    @property
    def vocab_size(self) -> int:
        return 100 + 128


MULTI_TURN = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "yo"},
    {"role": "user", "content": "2*3?"},
]
TOOL_REPLY = {
    "role": "assistant",
    "content": [
        {"type": "text", "text": "ok"},
        {"type": "python", "text": "2*3"},
        {"type": "python_output", "text": "6"},
        {"type": "text", "text": "6"},
    ],
}


def test_render_pair_masks_only_the_reply() -> None:
    preference = Preference(MULTI_TURN, TOOL_REPLY, {"role": "assistant", "content": "no"})
    pair, outcome = render_pair(CharTokenizer(), preference, 100)
    assert pair is not None and outcome == "used"
    prompt = [BOS, US, *chars("hi"), UE, AS, *chars("yo"), AE, US, *chars("2*3?"), UE, AS]
    chosen_reply = [*chars("ok"), PS, *chars("2*3"), PE, OS, *chars("6"), OE, *chars("6"), AE]
    chosen_mask = [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1]  # tool output carries no loss
    assert pair.chosen == (prompt + chosen_reply, [0] * len(prompt) + chosen_mask)
    # the earlier assistant turn "yo" of the prompt is masked too
    assert pair.rejected == (prompt + [*chars("no"), AE], [0] * len(prompt) + [1, 1, 1])


def test_render_pair_drops_or_truncates_what_does_not_fit() -> None:
    long = Preference(MULTI_TURN, {"role": "assistant", "content": "x" * 50}, TOOL_REPLY)
    tokenizer = CharTokenizer()
    assert render_pair(tokenizer, long, 40, "drop") == (None, "dropped")
    pair, outcome = render_pair(tokenizer, long, 40, "truncate")
    assert outcome == "truncated" and pair is not None
    assert len(pair.chosen[0]) == 40 and sum(pair.chosen[1]) == 40 - 16  # 16 prompt ids
    assert render_pair(tokenizer, long, 16, "truncate") == (None, "dropped")  # no room to reply


def rollout(text: str, reward: float, forced_at: tuple[int, ...] = ()) -> Rollout:
    tokens = [*chars(text), AE]
    forced = [i in forced_at for i in range(len(tokens))]
    return Rollout(tokens, forced, text, "stop", reward)


def problems_with(rollouts: list[list[Rollout]]) -> list[ProblemRollouts]:
    out = []
    for i, samples in enumerate(rollouts):
        problem = Problem([{"role": "user", "content": f"q{i}"}], "1")
        prompt = [BOS, US, *chars(f"q{i}"), UE, AS] if samples else []
        out.append(ProblemRollouts(i, problem, prompt, samples))
    return out


def test_on_policy_pairs_need_a_correct_and_a_wrong_sample() -> None:
    results = problems_with(
        [
            [rollout("a", 1.0), rollout("b", 1.0)],  # all correct: no pair
            [rollout("c", 0.0), rollout("d", 0.0)],  # all wrong: no pair
            [rollout("e", 0.0), rollout("f", 1.0), rollout("g", 0.0), rollout("h", 1.0)],
            [],  # the prompt did not fit: no pair
        ]
    )
    pairs = pairs_from_rollouts(results, per_prompt=1)
    assert [p.meta["index"] for p in pairs] == [2]
    prompt = [BOS, US, *chars("q2"), UE, AS]
    assert pairs[0].chosen == (prompt + [*chars("f"), AE], [0] * 6 + [1, 1])
    assert pairs[0].rejected == (prompt + [*chars("e"), AE], [0] * 6 + [1, 1])
    two = pairs_from_rollouts(results, per_prompt=2)
    assert [(p.chosen[0][6], p.rejected[0][6]) for p in two] == [
        (chars("f")[0], chars("e")[0]),
        (chars("h")[0], chars("g")[0]),
    ]
    # one correct sample against several wrong ones, at most per_prompt of them
    weak = problems_with([[rollout(c, 0.0) for c in "abc"] + [rollout("z", 1.0)]])
    pairs = pairs_from_rollouts(weak, per_prompt=2)
    assert [(p.chosen[0][6], p.rejected[0][6]) for p in pairs] == [
        (chars("z")[0], chars("a")[0]),
        (chars("z")[0], chars("b")[0]),
    ]
    assert len(pairs_from_rollouts(weak, per_prompt=8)) == 3


def test_forced_tool_output_of_a_sample_carries_no_loss() -> None:
    text = "k<<1+1>>2"  # pretend ids 2..6 were forced by the engine
    results = problems_with([[rollout(text, 1.0, forced_at=(2, 3, 4, 5, 6)), rollout("z", 0.0)]])
    [pair] = pairs_from_rollouts(results)
    assert pair.chosen[1] == [0] * 6 + [1, 1, 0, 0, 0, 0, 0, 1, 1, 1]


def test_saved_pairs_round_trip_and_read_as_a_preferences_dataset(tmp_path: Path) -> None:
    tokenizer = DecodingCharTokenizer()
    tokens = [*chars("ok"), PS, *chars("2*3"), PE, OS, *chars("6"), OE, *chars(" #### 6"), AE]
    forced = [False] * len(tokens)
    forced[7:10] = [True, True, True]  # <|output_start|> 6 <|output_end|>, forced by the engine
    assert [tokens[i] for i in range(7, 10)] == [OS, chars("6")[0], OE]
    assert completion_message(tokenizer, tokens) == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "ok"},
            {"type": "python", "text": "2*3"},
            {"type": "python_output", "text": "6"},
            {"type": "text", "text": " #### 6"},
        ],
    }
    problem = Problem([{"role": "user", "content": "2*3?"}], "6")
    prompt = [BOS, US, *chars("2*3?"), UE, AS]
    good = Rollout(tokens, forced, "", "stop", 1.0)
    bad = Rollout([*chars("#### 5"), AE], [False] * 7, "", "stop", 0.0)
    pairs = pairs_from_rollouts([ProblemRollouts(7, problem, prompt, [bad, good])])
    path = tmp_path / "pairs.jsonl"
    save_pairs(path, pairs, {7: problem}, tokenizer)
    assert load_pairs(path) == pairs  # exact ids and masks back
    record = json.loads(path.read_text())
    assert record["answer"] == "6" and record["chosen_reward"] == 1.0
    # the same file is a preferences dataset; rendering it gives the sampled ids and masks
    options = LocalFileOptions(path=str(path), val_fraction=0.0)
    dataset = open_dataset("preferences-jsonl", kind="preferences", options=options)
    [preference] = [item for item, _ in dataset.iter("train")]
    rendered, _ = render_pair(tokenizer, preference, 100)
    assert rendered is not None
    assert (rendered.chosen, rendered.rejected) == (pairs[0].chosen, pairs[0].rejected)
    (tmp_path / "bad.jsonl").write_text('{"index": 1}\n')
    with pytest.raises(Exception, match="line 1: not a saved pair"):
        load_pairs(tmp_path / "bad.jsonl")


def toy_pairs(n: int) -> list[Pair]:
    out = []
    for i in range(n):
        prompt = [BOS, US, *chars(f"p{i}"), UE, AS]
        chosen = (prompt + [*chars("y" * (1 + i % 3)), AE], [0] * len(prompt) + [1] * (2 + i % 3))
        rejected = (prompt + [*chars("n" * (1 + i % 4)), AE], [0] * len(prompt) + [1] * (2 + i % 4))
        out.append(Pair(chosen, rejected, {"index": i}))
    return out


def test_pair_batches_two_ranks_take_one_ranks_batch_and_resume_exactly() -> None:
    pairs = toy_pairs(11)  # an odd count: epochs end mid-batch and mid-stride

    def batches(rank: int, world: int, rows: int, state=None) -> PairBatches:
        tokenizer = CharTokenizer()
        return PairBatches(PairList(pairs), tokenizer, 64, rows, AE, "drop", rank, world, 5, state)

    one, ranks = batches(0, 1, 4), [batches(r, 2, 2) for r in range(2)]
    for _ in range(9):  # three epochs and more
        inputs, targets = one.next_batch()
        assert inputs.shape[0] == 8
        # rows 0..3 are chosen sequences (replies of y), rows 4..7 the rejected (n)
        assert set(targets[:4][targets[:4] >= 0].tolist()) <= {*chars("y"), AE}
        assert set(targets[4:][targets[4:] >= 0].tolist()) <= {*chars("n"), AE}
        split = [b.next_batch()[1] for b in ranks]
        mine = sorted(tuple(r[r >= 0].tolist()) for r in targets)
        theirs = sorted(tuple(r[r >= 0].tolist()) for t in split for r in t)
        assert mine == theirs  # the same global batch of pairs
    resumed = batches(0, 1, 4, one.state())
    resumed_rank = batches(1, 2, 2, ranks[1].state())
    for _ in range(5):
        a, b = one.next_batch(), resumed.next_batch()
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        a, b = ranks[1].next_batch(), resumed_rank.next_batch()
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert one.epoch >= 5 and one.stats()["pairs_used"] == 4 * 14


# ---------------------------------------------------------------- through a real model


@pytest.fixture(scope="module")
def tiny_gpt():
    torch.manual_seed(0)
    factory = GPTFactory(GPTOptions(depth=2, aspect_ratio=32, head_dim=16, sequence_len=64))
    model = factory.build(factory.config(DecodingCharTokenizer().vocab_size))
    with torch.no_grad():  # random weights everywhere, so every position matters
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0.0, 0.1)
    return model


def test_sequence_logps_sum_exactly_the_reply_tokens(tiny_gpt) -> None:
    pairs = toy_pairs(3)
    sides = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    batch = pad_sequences(sides, AE)
    got = sequence_logps(tiny_gpt, batch.inputs, batch.targets)
    with torch.no_grad():
        logprobs = torch.log_softmax(tiny_gpt(batch.inputs).double(), dim=-1)
    for row, (ids, mask) in enumerate(sides):
        expected = sum(logprobs[row, i - 1, ids[i]].item() for i in range(1, len(ids)) if mask[i])
        assert got[row].item() == pytest.approx(expected, rel=1e-5)


def test_step_zero_loss_is_log2_and_only_reply_positions_get_gradient(tiny_gpt) -> None:
    policy = copy.deepcopy(tiny_gpt).train()
    reference = copy.deepcopy(tiny_gpt).eval()
    policy.fused_head = False  # whole logits, so the hook below sees their gradient
    pairs = toy_pairs(4)
    batch = pad_sequences([p.chosen for p in pairs] + [p.rejected for p in pairs], AE)
    captured = {}

    def keep(module, args, output):
        output.retain_grad()
        captured["logits"] = output

    handle = policy.lm_head.register_forward_hook(keep)
    loss_sum, stats = pair_sums(policy, reference, batch.inputs, batch.targets, beta=0.1)
    handle.remove()
    assert loss_sum.item() / 4 == pytest.approx(LOG2, abs=1e-6)
    named = dict(zip(STATS, stats.tolist(), strict=True))
    # no pair has won yet: policy = reference, up to rounding (the reference's no-grad pass
    # takes the inference path and the fused head)
    assert abs(named["reward_margin"]) < 1e-5
    loss_sum.backward()
    grad = captured["logits"].grad.abs().sum(dim=-1)  # (rows, T)
    carries = batch.targets >= 0
    assert grad[~carries].max().item() == 0.0  # prompt and padding positions: no gradient
    assert (grad[carries] > 0).all()  # every reply token: some gradient
    assert all(p.grad is None for p in reference.parameters())


def test_nll_term_adds_the_chosen_replies_mean_negative_log_likelihood(tiny_gpt) -> None:
    pairs = toy_pairs(3)
    batch = pad_sequences([p.chosen for p in pairs] + [p.rejected for p in pairs], AE)
    plain, stats = pair_sums(tiny_gpt, tiny_gpt, batch.inputs, batch.targets, beta=0.1)
    mixed, _ = pair_sums(tiny_gpt, tiny_gpt, batch.inputs, batch.targets, 0.1, nll_coef=0.5)
    logps = sequence_logps(tiny_gpt, batch.inputs, batch.targets)[:3]
    lengths = torch.tensor([sum(p.chosen[1][1:]) for p in pairs], dtype=torch.float32)
    nll = (-logps / lengths).sum().item()
    assert nll > 0 and dict(zip(STATS, stats.tolist(), strict=True))["chosen_nll"] == (
        pytest.approx(nll, rel=1e-5)
    )
    assert mixed.item() == pytest.approx(plain.item() + 0.5 * nll, rel=1e-5)


# ---------------------------------------------------------------- the stage, end to end
# On the shared small chat model of conftest (run `a`: sft on one-step additions up to 9).

COLOURS = ("red", "green", "blue", "gold", "grey", "pink", "teal", "plum")
THINGS = ("cat", "car", "hat", "cup", "box", "pen", "bag", "map", "fox", "jar")


def write_preferences(path: Path) -> Path:
    """Prompts asking a thing's colour: chosen answers with a colour, rejected refuses.
    80 pairs; the val split (20%, by stable hash) holds the held-out ones."""
    with open(path, "w", encoding="utf-8") as handle:
        for i, (thing, colour) in enumerate((t, c) for t in THINGS for c in COLOURS):
            record = {
                "prompt": f"What colour is my {thing} number {i}?",
                "chosen": f"Your {thing} is {colour}.",
                "rejected": "I will not say.",
            }
            handle.write(json.dumps(record) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def dpo_records(home: Path) -> list[dict]:
    return [r for r in read_jsonl(home / "runs/a/metrics.jsonl") if r.get("stage") == "dpo"]


def step_records(home: Path) -> list[dict]:
    return [r for r in dpo_records(home) if "loss" in r and "step" in r]


def done(home: Path) -> dict:
    return json.loads((home / "runs/a/dpo/done.json").read_text())["result"]


def weights(home: Path, step: int, stage: str = "dpo") -> dict[str, torch.Tensor]:
    path = home / "runs/a" / stage / "checkpoints" / f"step_{step:08d}" / "model.safetensors"
    return load_file(str(path))


def dpo(home: Path, *extra: str, torchrun: int = 0, sites: tuple[Path, ...] = ()) -> None:
    args = ["run", "dpo", "--run", "a", "-o", "dpo.sample_tokens=4", *extra]
    if torchrun:
        result = run_torchrun(torchrun, args, home, sites=sites)
    else:
        result = run_cli(args, home, sites=sites)
    assert result.returncode == 0, result.stderr[-3000:]


def offline(home: Path) -> list[str]:
    """Options of dpo on the preferences file of ``home``."""
    return [
        *("-o", f"dpo.dataset=preferences-jsonl:{home / 'prefs.jsonl'}"),
        *("-o", "preferences-jsonl.val_fraction=0.2", "-o", "dpo.eval_every=1000"),
    ]


# 12 steps of 4 pairs with the default beta and learning rates, a checkpoint every 3 (kept).
TWELVE = [
    *("-o", "dpo.max_steps=12", "-o", "dpo.checkpoint_every=3"),
    *("-o", "dpo.keep_checkpoints=10"),
]


@pytest.fixture(scope="module")
def offline_home(arithmetic_chat_home: Path, tmp_path_factory) -> Path:
    """Run `a` after 12 dpo steps on the colour preferences."""
    home = copy_run(arithmetic_chat_home, tmp_path_factory.mktemp("dpo-offline"))
    write_preferences(home / "prefs.jsonl")
    dpo(home, *offline(home), *TWELVE)
    return home


def test_dpo_starts_at_log2_and_learns_held_out_preferences(offline_home: Path) -> None:
    steps = step_records(offline_home)
    assert [r["step"] for r in steps] == list(range(12))
    # policy == reference at step 0: the DPO loss is log 2; the total adds the chosen NLL
    assert steps[0]["dpo_loss"] == pytest.approx(LOG2, abs=1e-5)
    assert steps[0]["loss"] == pytest.approx(LOG2 + steps[0]["chosen_nll"], abs=1e-5)
    assert steps[0]["reward_margin"] == pytest.approx(0.0, abs=1e-5)
    assert steps[-1]["dpo_loss"] < steps[0]["dpo_loss"] - 0.3
    for key in ("reward_accuracy", "chosen_logp", "rejected_logp", "chosen_reward"):
        assert key in steps[-1]
    result = done(offline_home)
    # the held-out pairs (never trained on) at the start: log 2, no pair won yet, and the
    # reference prefers the refusal to the chosen answer
    assert result["base_val_dpo_loss"] == pytest.approx(LOG2, abs=1e-5)
    assert result["base_val_reward_accuracy"] == 0.0
    assert result["base_val_chosen_logp"] < result["base_val_rejected_logp"]
    assert result["val_reward_accuracy"] >= 0.9, result
    assert result["val_dpo_loss"] < LOG2 - 0.3, result
    assert result["val_loss"] < result["base_val_loss"]
    assert result["val_reward_margin"] > 1.0
    assert result["val_chosen_logp"] > result["base_val_chosen_logp"]
    assert result["val_rejected_logp"] < result["base_val_rejected_logp"]
    meta = json.loads((offline_home / "runs/a/dpo/checkpoints/step_00000011/meta.json").read_text())
    assert meta["reference"] == {"stage": "sft", "step": 59}  # the newest chat checkpoint
    records = dpo_records(offline_home)
    assert next(r for r in records if r.get("event") == "plan")["batch_pairs"] == 4
    assert next(r for r in records if r.get("event") == "init")["source"] == "sft"


@pytest.mark.slow
def test_dpo_exact_resume_after_sigkill(offline_home: Path, tmp_path: Path) -> None:
    home = copy_run(offline_home, tmp_path)
    shutil.copy(offline_home / "prefs.jsonl", home / "prefs.jsonl")
    shutil.rmtree(home / "runs/a/dpo")
    args = ["run", "dpo", "--run", "a", "-o", "dpo.sample_tokens=4", *offline(home), *TWELVE]
    _, saved = kill_when_checkpointed(args, home, home / "runs/a/dpo/checkpoints", 2)
    assert saved and saved[-1] < 11
    result = run_cli(args, home)
    assert result.returncode == 0, result.stderr[-3000:]
    resumes = [r for r in dpo_records(home) if r.get("event") == "resume"]
    assert resumes and resumes[-1]["step"] == saved[-1] + 1
    a, b = weights(offline_home, 11), weights(home, 11)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    straight = {r["step"]: r["loss"] for r in step_records(offline_home)}
    resumed = [r for r in step_records(home) if r["step"] > saved[-1]]
    assert resumed and all(r["loss"] == straight[r["step"]] for r in resumed)
    assert done(home)["val_loss"] == done(offline_home)["val_loss"]


@pytest.fixture(scope="module")
def coin_site(tmp_path_factory) -> Path:
    """The test plugin with the ``coin`` problems dataset: an answer of even length is right,
    so any model solves about half (the arithmetic model here solves too few for pairs)."""
    return install_package(TEST_PLUGINS / "nanochat-coin", tmp_path_factory.mktemp("coin"))


# On-policy: 16 coin problems x 4 samples of at most 12 tokens, 8 held-out problems.
ON_POLICY = [
    *("-o", "dpo.dataset=coin", "-o", "dpo.prompts=16", "-o", "dpo.samples=4"),
    *("-o", "dpo.max_new_tokens=12", "-o", "dpo.eval_problems=8"),
]


def test_on_policy_pairs_are_saved_and_a_resume_reads_them_back(
    arithmetic_chat_home: Path, coin_site: Path, tmp_path: Path
) -> None:
    home = copy_run(arithmetic_chat_home, tmp_path)
    four = [
        *("-o", "dpo.max_steps=4", "-o", "dpo.checkpoint_every=2"),
        *("-o", "dpo.keep_checkpoints=5", "-o", "dpo.device_batch_size=2"),
    ]
    dpo(home, *ON_POLICY, *four, sites=(coin_site,))
    [event] = [r for r in dpo_records(home) if r.get("event") == "pairs"]
    saved = read_jsonl(home / "runs/a/dpo/pairs.jsonl")
    assert event["prompts"] == 16 and event["samples"] == 64
    assert 0.05 < event["sample_accuracy"] < 0.95  # both right and wrong samples
    assert len(saved) == event["pairs"] == event["prompts_with_both"] > 0
    assert len({r["index"] for r in saved}) == len(saved)  # one pair per prompt
    tokenizer = Registry.load().create("tokenizer", "rustbpe").load(home / "runs/a/tokenizer")
    for record in saved:  # chosen = a correct sample, rejected = a wrong one (even length wins)
        assert (record["chosen_reward"], record["rejected_reward"]) == (1.0, 0.0)
        assert len(tokenizer.decode(record["chosen_tokens"])) % 2 == 0
        assert len(tokenizer.decode(record["rejected_tokens"])) % 2 == 1
        assert record["prompt"][0]["role"] == "user" and record["chosen"]["role"] == "assistant"
    result = done(home)
    assert result["eval_problems"] == 8 and {"pass@1", "base_pass@1"} <= result.keys()
    # resume from step 2: the pairs are read back, not sampled again, and the end is the same
    before = weights(home, 3)
    shutil.rmtree(home / "runs/a/dpo/checkpoints/step_00000003")
    (home / "runs/a/dpo/done.json").unlink()
    count = len(dpo_records(home))
    dpo(home, *ON_POLICY, *four, sites=(coin_site,))
    new = dpo_records(home)[count:]
    assert [r["step"] for r in new if r.get("event") == "resume"] == [2]
    assert not [r for r in new if r.get("event") == "pairs"]
    after = weights(home, 3)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_on_policy_dpo_raises_held_out_pass_at_1(arithmetic_chat_home: Path, tmp_path) -> None:
    """Must-show 3 at test scale: pairs from 256 problems x 8 samples at temperature 0.7 (one
    correct answer against up to 4 wrong ones), two epochs; greedy pass@1 on 256 held-out
    problems rises (measured 0.008 -> 0.078; see benchmarks/README.md)."""
    home = copy_run(arithmetic_chat_home, tmp_path)
    dpo(
        home,
        *("-o", "dpo.prompts=256", "-o", "dpo.samples=8", "-o", "dpo.temperature=0.7"),
        *("-o", "dpo.pairs_per_prompt=4", "-o", "dpo.max_new_tokens=48"),
        *("-o", "dpo.eval_problems=256", "-o", "dpo.epochs=2", "-o", "dpo.eval_every=1000"),
    )
    result = done(home)
    assert result["eval_problems"] == 256
    assert result["pass@1"] > result["base_pass@1"] + 0.03, result


@pytest.mark.slow
def test_dpo_two_ranks_match_one_rank(
    arithmetic_chat_home: Path, coin_site: Path, tmp_path: Path
) -> None:
    """On-policy pairs sampled by 1 process and by 2 (each its share of the prompts) are the
    same; training on them, 1 process x 4 pairs and 2 processes x 2 pairs (the same global
    batch and seed) give the same losses and weights within float tolerance."""
    common = [*ON_POLICY, "-o", "dpo.total_batch_pairs=4", "-o", "dpo.max_steps=6"]
    one = copy_run(arithmetic_chat_home, tmp_path / "one")
    dpo(one, *common, "-o", "dpo.device_batch_size=4", sites=(coin_site,))
    two = copy_run(arithmetic_chat_home, tmp_path / "two")
    dpo(two, *common, "-o", "dpo.device_batch_size=2", torchrun=2, sites=(coin_site,))
    pairs = [(home / "runs/a/dpo/pairs.jsonl").read_text() for home in (one, two)]
    assert pairs[0] == pairs[1]
    a_steps, b_steps = step_records(one), step_records(two)
    assert len(a_steps) == len(b_steps) == 6
    for a, b in zip(a_steps, b_steps, strict=True):
        for key in ("loss", "reward_accuracy", "chosen_logp", "rejected_logp"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (key, a, b)
    # the weights agree to within 1% of how far the 6 steps moved them (float sums differ in
    # order over 2 ranks, and Adam's normalisation magnifies that on rarely seen embeddings)
    wa, wb, start = weights(one, 5), weights(two, 5), weights(one, 59, "sft")
    for key in wa:
        moved = (wa[key] - start[key]).abs().max().item()
        assert (wa[key] - wb[key]).abs().max().item() <= 0.01 * moved + 1e-7, key
    assert done(two)["pass@1"] == done(one)["pass@1"]
    state = torch.load(two / "runs/a/dpo/checkpoints/step_00000005/state.pt", weights_only=True)
    assert len(state["data"]) == 2


def test_dpo_bad_input_fails_in_one_line(arithmetic_chat_home: Path, tmp_path: Path) -> None:
    cases = [
        (["-o", "dpo.beta=0"], "dpo.beta"),
        (["-o", "dpo.dataset=demo-chat"], "preferences or a problems dataset"),
        (["-o", "dpo.total_batch_pairs=3"], "multiple of device_batch_size"),
        (["-o", "dpo.source=nope"], "no model stage 'nope'"),
    ]
    for i, (extra, message) in enumerate(cases):
        home = copy_run(arithmetic_chat_home, tmp_path / str(i))  # a run remembers options
        result = run_cli(["run", "dpo", "--run", "a", "-o", "dpo.max_steps=1", *extra], home)
        assert result.returncode != 0, extra
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    home = copy_run(arithmetic_chat_home, tmp_path / "no-chat")
    shutil.rmtree(home / "runs/a/sft")
    result = run_cli(["run", "dpo", "--run", "a"], home)
    assert result.returncode != 0 and "dpo continues from a chat model" in result.stderr
