"""The pretrain stage: packing, schedule, bits per byte, exact resume, torchrun, SIGKILL."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import kill_when_checkpointed, run_cli, run_torchrun
from nanochat_stages.packing import MIN_REMAINDER, BestFitPacker
from nanochat_stages.schedule import lr_multiplier
from safetensors.torch import load_file

from nanochat.core.evaluation import bpb_sums, evaluate_bpb

SMALL = [
    "-o",
    "tokenizer.vocab_size=512",
    "-o",
    "tokenizer.max_chars=400000",
    "-o",
    "tokenizer.eval_chars=20000",
    "-o",
    "model.depth=2",
    "-o",
    "model.head_dim=64",
    "-o",
    "model.sequence_len=64",
    "-o",
    "pretrain.device_batch_size=4",
    "-o",
    "pretrain.eval_tokens=1024",
    "-o",
    "pretrain.sample_tokens=4",
    "-o",
    "pretrain.keep_checkpoints=10",
]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_best_fit_packing_rows_start_with_bos_and_crop_only_when_needed() -> None:
    rng = np.random.default_rng(0)
    docs = [np.concatenate([[0], rng.integers(1, 100, size=n)]) for n in rng.integers(3, 40, 200)]
    it = iter(docs)
    packer = BestFitPacker(32, lambda: next(it), buffer_size=16)
    rows = packer.next_batch(20)
    assert rows.shape == (20, 32)
    assert (rows[:, 0] == 0).all()
    cropped = 0
    for row in rows:
        starts = list(np.flatnonzero(row == 0)) + [len(row)]
        pieces = [row[a:b] for a, b in zip(starts, starts[1:], strict=False)]
        whole = [any(len(p) == len(d) and (p == d).all() for d in docs) for p in pieces]
        cropped += whole.count(False)
        assert whole.count(False) <= 1 and (all(whole[:-1]))
    assert cropped < len(rows)  # most rows are filled by whole documents


class Source:
    """Documents in order, with a position that can be copied."""

    def __init__(self, docs: list[np.ndarray], position: int = 0):
        self.docs, self.position = docs, position

    def __call__(self) -> np.ndarray:
        self.position += 1
        return self.docs[self.position - 1]


def test_packer_state_round_trip() -> None:
    docs = [np.arange(n) for n in range(5, 80)]
    source_a = Source(docs)
    a = BestFitPacker(16, source_a, buffer_size=8)
    a.next_batch(3)
    b = BestFitPacker(16, Source(docs, source_a.position), buffer_size=8)
    b.load_state(a.state())
    assert (a.next_batch(4) == b.next_batch(4)).all()


def test_schedule_warmup_constant_warmdown() -> None:
    values = [lr_multiplier(s, 10, 0.2, 0.4, 0.0) for s in range(10)]
    assert values[:2] == [0.5, 1.0]
    assert values[2:6] == [1.0] * 4
    assert values[6:] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert all(a >= b for a, b in zip(values[1:], values[2:], strict=False))  # never rises again
    assert lr_multiplier(9, 10, 0.0, 0.5, 0.1) == pytest.approx(0.2 + 0.8 * 0.1)


def test_bpb_matches_hand_computation() -> None:
    vocab = 5
    token_bytes = torch.tensor([0, 1, 2, 3, 1])  # id 0 is a special token
    logits = torch.tensor(
        [[[2.0, 1.0, 0.0, -1.0, 0.5], [0.0, 0.0, 3.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0, 5.0]]]
    )
    targets = torch.tensor([[2, 0, 3]])

    class Fixed(torch.nn.Module):
        def forward(self, inputs, targets, loss_reduction="mean"):
            return F.cross_entropy(
                logits.view(-1, vocab), targets.view(-1), ignore_index=-1, reduction=loss_reduction
            )

    def nll(row: list[float], target: int) -> float:
        return -math.log(math.exp(row[target]) / sum(math.exp(v) for v in row))

    expected_nats = nll(logits[0, 0].tolist(), 2) + nll(logits[0, 2].tolist(), 3)
    expected = expected_nats / math.log(2) / (2 + 3)  # the special-token target is excluded
    got = evaluate_bpb(Fixed(), [(torch.zeros(1, 3, dtype=torch.long), targets)], token_bytes)
    assert got == pytest.approx(expected, rel=1e-6)
    loss, n_bytes = bpb_sums(torch.ones(3), torch.tensor([1, -1, 4]), token_bytes)
    assert (loss.item(), n_bytes.item()) == (2.0, 2.0)  # ignored targets count nothing


@pytest.fixture(scope="module")
def trained_tokenizer(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("tok-home")
    result = run_cli(["run", "tokenizer", "--run", "base", *SMALL], home)
    assert result.returncode == 0, result.stderr
    return home / "runs" / "base" / "tokenizer"


def prepare_run(home: Path, name: str, tokenizer_dir: Path) -> None:
    run_dir = home / "runs" / name
    run_dir.mkdir(parents=True)
    shutil.copytree(tokenizer_dir, run_dir / "tokenizer")


def final_weights(home: Path, name: str, step: int) -> dict[str, torch.Tensor]:
    path = home / "runs" / name / "pretrain" / "checkpoints" / f"step_{step:08d}"
    return load_file(str(path / "model.safetensors"))


@pytest.mark.slow
def test_exact_resume_equals_straight_run(tmp_path: Path, trained_tokenizer: Path) -> None:
    args = [
        *SMALL,
        "-o",
        "pretrain.max_steps=6",
        "-o",
        "pretrain.checkpoint_every=3",
        "-o",
        "pretrain.eval_every=3",
    ]
    for name in ("straight", "resumed"):
        prepare_run(tmp_path, name, trained_tokenizer)
        result = run_cli(["run", "tokenizer", "pretrain", "--run", name, *args], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    # Make "resumed" continue from its step-2 checkpoint, as if it had stopped half way.
    resumed = tmp_path / "runs" / "resumed" / "pretrain"
    shutil.rmtree(resumed / "checkpoints" / "step_00000005")
    (resumed / "done.json").unlink()
    result = run_cli(["run", "tokenizer", "pretrain", "--run", "resumed", *args], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = final_weights(tmp_path, "straight", 5), final_weights(tmp_path, "resumed", 5)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    losses = {}
    for name in ("straight", "resumed"):
        records = read_jsonl(tmp_path / "runs" / name / "metrics.jsonl")
        losses[name] = {
            r["step"]: r["loss"] for r in records if r.get("stage") == "pretrain" and "loss" in r
        }
    assert losses["straight"] == losses["resumed"]


@pytest.mark.slow
def test_torchrun_two_ranks_follow_the_single_process_curve(
    tmp_path: Path, trained_tokenizer: Path
) -> None:
    common = [
        *SMALL,
        "-o",
        "pretrain.max_steps=12",
        "-o",
        "pretrain.total_batch_tokens=1024",
        "-o",
        "pretrain.eval_every=6",
        "-o",
        "pretrain.checkpoint_every=100",
        "-o",
        "pretrain.device_batch_size=8",
    ]
    prepare_run(tmp_path, "one", trained_tokenizer)
    single = run_cli(
        ["run", "pretrain", "--run", "one", *common, "-o", "pretrain.total_batch_tokens=1024"],
        tmp_path,
        OMP_NUM_THREADS="1",
    )
    assert single.returncode == 0, single.stderr[-3000:]
    prepare_run(tmp_path, "two", trained_tokenizer)
    two = run_torchrun(2, ["run", "pretrain", "--run", "two", *common], tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    curves = {}
    for name in ("one", "two"):
        records = read_jsonl(tmp_path / "runs" / name / "metrics.jsonl")
        curves[name] = [r["loss"] for r in records if r.get("stage") == "pretrain" and "loss" in r]
    assert len(curves["one"]) == len(curves["two"]) == 12
    # Ranks read disjoint shards, so rows differ; the curves agree within sampling noise.
    diffs = [abs(a - b) for a, b in zip(curves["one"], curves["two"], strict=True)]
    assert max(diffs) < 0.5, diffs
    assert curves["two"][-1] < curves["two"][0] - 1.0
    files = sorted(p.name for p in (tmp_path / "runs" / "two" / "pretrain").iterdir())
    assert files == ["checkpoints", "done.json", "samples.txt"]
    assert len(list((tmp_path / "runs" / "two").glob("pretrain/checkpoints/step_*"))) == 1


@pytest.mark.slow
def test_sigkill_during_pretrain_resumes(tmp_path: Path, trained_tokenizer: Path) -> None:
    prepare_run(tmp_path, "k", trained_tokenizer)
    args = [
        "run",
        "tokenizer",
        "pretrain",
        "--run",
        "k",
        *SMALL,
        "-o",
        "pretrain.max_steps=40",
        "-o",
        "pretrain.checkpoint_every=2",
        "-o",
        "pretrain.eval_every=1000",
    ]
    checkpoints = tmp_path / "runs" / "k" / "pretrain" / "checkpoints"
    _, steps = kill_when_checkpointed(args, tmp_path, checkpoints, 2)
    assert steps, "no checkpoint before the kill"
    assert steps[-1] < 39, "the run finished before it could be killed"
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_jsonl(tmp_path / "runs" / "k" / "metrics.jsonl")
    resumes = [r for r in records if r.get("event") == "resume"]
    assert resumes and resumes[-1]["step"] == steps[-1] + 1
    done = json.loads((tmp_path / "runs" / "k" / "pretrain" / "done.json").read_text())
    assert done["result"]["steps"] == 40


def test_cropped_documents_keep_their_rest() -> None:
    row_len, bos = 16, 0
    docs = [np.concatenate([[bos], np.arange(1000 * i + 1, 1000 * i + 41)]) for i in range(1, 30)]
    source = Source(docs)
    packer = BestFitPacker(row_len, source, buffer_size=4)
    rows = packer.next_batch(40)
    assert (rows[:, 0] == bos).all()
    emitted = rows[rows != bos]
    assert len(emitted) == len(set(emitted.tolist()))  # nothing is trained on twice
    buffered = {int(t) for doc in packer.buffer for t in doc[1:]}
    for doc in docs[: source.position]:
        missing = set(doc[1:].tolist()) - set(emitted.tolist()) - buffered
        # every token of a document taken is in a row or still buffered, except a short tail
        assert len(missing) < MIN_REMAINDER
        assert all(t > max(doc) - MIN_REMAINDER for t in missing)
