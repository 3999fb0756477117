"""The `rl` stage end to end on a small chat model and easy arithmetic problems: rewards rise,
the metrics, exact resume (re-run and SIGKILL), torchrun with 2 processes against 1, and clear
errors (Must-shows 3 and 5 of issue 14, at test scale)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import copy_run, kill_when_checkpointed, run_cli, run_torchrun
from safetensors.torch import load_file

# Small steps: 4 problems x 8 samples, answers of at most 48 tokens, 32 held-out problems.
RL = [
    *("-o", "rl.prompts_per_step=4"),
    *("-o", "rl.samples=8"),
    *("-o", "rl.max_new_tokens=48"),
    *("-o", "rl.eval_problems=32"),
    *("-o", "rl.device_batch_size=16"),
]


# 6 steps, a checkpoint every 2 (all kept), held-out pass@1 every 3.
SIX_STEPS = [
    *("-o", "rl.max_steps=6", "-o", "rl.checkpoint_every=2"),
    *("-o", "rl.keep_checkpoints=5", "-o", "rl.eval_every=3"),
]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def records(home: Path, stage: str = "rl") -> list[dict]:
    return [r for r in read_jsonl(home / "runs" / "a" / "metrics.jsonl") if r.get("stage") == stage]


def steps(home: Path) -> list[dict]:
    return [r for r in records(home) if "reward" in r]


def weights(home: Path, step: int) -> dict[str, torch.Tensor]:
    path = home / "runs" / "a" / "rl" / "checkpoints" / f"step_{step:08d}" / "model.safetensors"
    return load_file(str(path))


def rl(home: Path, *extra: str) -> None:
    result = run_cli(["run", "rl", "--run", "a", *RL, *extra], home)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def straight(arithmetic_chat_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 rl steps, a checkpoint every 2 (kept), held-out pass@1 every 3."""
    home = copy_run(arithmetic_chat_home, tmp_path_factory.mktemp("rl-straight"))
    rl(home, *SIX_STEPS)
    return home


def test_metrics_of_every_step(straight: Path) -> None:
    done = json.loads((straight / "runs" / "a" / "rl" / "done.json").read_text())["result"]
    assert done["steps"] == 6 and done["eval_problems"] == 32
    assert {"base_pass@1", "pass@1", "pass@1_stderr"} <= done.keys()
    rows = steps(straight)
    assert [r["step"] for r in rows] == list(range(6))
    for row in rows:
        assert 0.0 <= row["reward"] <= 1.0 and row["sampled_tokens"] > 0
        assert row["forced_tokens"] >= 0 and 0.0 <= row["no_signal_frac"] <= 1.0
        assert "kl" not in row and "clip_frac" not in row  # both off by default
    evals = [r["step"] for r in records(straight) if r.get("event") == "eval"]
    assert evals == [2, 5]
    init = [r for r in records(straight) if r.get("event") == "init"]
    assert init[0]["source"] == "sft/step_00000059"
    assert (straight / "runs" / "a" / "rl" / "samples.txt").read_text().strip()


def test_rerun_resumes_exactly(straight: Path, tmp_path: Path) -> None:
    """Deleting the last checkpoints and running again recomputes the same steps bit for bit."""
    home = copy_run(straight, tmp_path)
    stage = home / "runs" / "a" / "rl"
    shutil.rmtree(stage / "checkpoints" / "step_00000005")
    (stage / "done.json").unlink()
    rl(home, *SIX_STEPS)
    resumes = [r for r in records(home) if r.get("event") == "resume"]
    assert resumes[-1]["step"] == 4
    a, b = weights(straight, 5), weights(home, 5)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    before = {r["step"]: r for r in steps(straight)}
    for row in steps(home)[-2:]:
        assert row["reward"] == before[row["step"]]["reward"]
        assert row["sampled_tokens"] == before[row["step"]]["sampled_tokens"]
        assert row["loss"] == before[row["step"]]["loss"]


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_exactly(
    straight: Path, arithmetic_chat_home: Path, tmp_path
) -> None:
    home = copy_run(arithmetic_chat_home, tmp_path)
    args = ["run", "rl", "--run", "a", *RL, *SIX_STEPS]
    checkpoints = home / "runs" / "a" / "rl" / "checkpoints"
    _, saved = kill_when_checkpointed(args, home, checkpoints, 1)
    assert saved and saved[-1] < 5
    result = run_cli(args, home)
    assert result.returncode == 0, result.stderr[-3000:]
    resumes = [r for r in records(home) if r.get("event") == "resume"]
    assert resumes and resumes[-1]["step"] == saved[-1] + 1
    a, b = weights(straight, 5), weights(home, 5)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_kl_and_clipping_are_measured_when_on(arithmetic_chat_home: Path, tmp_path: Path) -> None:
    home = copy_run(arithmetic_chat_home, tmp_path)
    rl(
        home,
        *("-o", "rl.max_steps=2", "-o", "rl.kl_coef=0.1", "-o", "rl.clip_ratio=0.2"),
        *("-o", "rl.updates_per_batch=3", "-o", "rl.eval_every=100"),
    )
    rows = steps(home)
    assert len(rows) == 2
    assert all(r["kl"] >= 0 and 0 <= r["clip_frac"] <= 1 for r in rows)
    # the first update of the first batch starts at the reference: later updates move away
    assert rows[-1]["kl"] > 0
    assert any(r["clip_frac"] > 0 for r in rows)


# What makes this model learn in 30 steps: a constant learning rate three times the default with
# a short warmdown, and samples at temperature 0.7 (greedy answers of this model are right half
# the time but flip easily, so held-out pass@1 is measured at the training temperature too).
LEARNS = [
    *("-o", "rl.max_steps=30", "-o", "rl.prompts_per_step=8", "-o", "rl.eval_every=30"),
    *("-o", "rl.eval_problems=128", "-o", "rl.temperature=0.7", "-o", "rl.eval_temperature=0.7"),
    *("-o", "rl.matrix_lr=0.003", "-o", "rl.embedding_lr=0.03", "-o", "rl.unembedding_lr=0.0006"),
    *("-o", "rl.warmdown_ratio=0.2"),
]


@pytest.mark.slow
def test_rl_raises_the_reward(arithmetic_chat_home: Path, tmp_path: Path) -> None:
    """On easy arithmetic the samples' mean reward and held-out pass@1 rise (measured: reward
    0.17 -> 0.31 from the first to the last 10 steps, pass@1 0.20 -> 0.28 on 128 problems)."""
    home = copy_run(arithmetic_chat_home, tmp_path)
    # sft again with its learning rate kept high longer: greedy answers ~50% right (not 0%),
    # sampled ones ~10%, so that samples carry rewards to learn from
    shutil.rmtree(home / "runs" / "a" / "sft")
    result = run_cli(["run", "sft", "--run", "a", "-o", "sft.warmdown_ratio=0.2"], home)
    assert result.returncode == 0, result.stderr[-3000:]
    rl(home, *LEARNS)
    rewards = [r["reward"] for r in steps(home)]
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    done = json.loads((home / "runs" / "a" / "rl" / "done.json").read_text())["result"]
    assert last > first + 0.08, rewards
    assert done["pass@1"] > done["base_pass@1"] + 0.05, done


@pytest.mark.slow
def test_two_processes_match_one(arithmetic_chat_home: Path, tmp_path: Path) -> None:
    """torchrun with 2 processes (gloo) gives the same samples and rewards as 1 process for the
    same global batch and seed, and the same weights within 1e-5 (all-reduced gradients are
    summed in another order)."""
    args = ["-o", "rl.max_steps=2", "-o", "rl.checkpoint_every=2"]
    single = copy_run(arithmetic_chat_home, tmp_path / "one")
    rl(single, *args)
    double = copy_run(arithmetic_chat_home, tmp_path / "two")
    result = run_torchrun(2, ["run", "rl", "--run", "a", *RL, *args], double)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = steps(single), steps(double)
    assert [r["step"] for r in two] == [0, 1]
    for a, b in zip(one, two, strict=True):
        assert a["reward"] == b["reward"] and a["sampled_tokens"] == b["sampled_tokens"]
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    a, b = weights(single, 1), weights(double, 1)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst
    state = torch.load(
        double / "runs" / "a" / "rl" / "checkpoints" / "step_00000001" / "state.pt",
        weights_only=True,
    )
    assert len(state["data"]) == 2 and state["data"][0] == state["data"][1]


def test_rl_needs_a_chat_model(arithmetic_chat_home: Path, tmp_path: Path) -> None:
    home = copy_run(arithmetic_chat_home, tmp_path)
    shutil.rmtree(home / "runs" / "a" / "sft")
    result = run_cli(["run", "rl", "--run", "a", *RL], home)
    assert result.returncode != 0
    assert "rl continues from a chat model" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli(["run", "rl", "--run", "a", *RL, "-o", "rl.source=nope"], home)
    assert result.returncode != 0 and "no model stage 'nope'" in result.stderr
