"""GSM8K: every bundled test problem parses, and reward is right on a table of completions."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from dataset_helpers import make_registry, write_jsonl
from nanochat_datasets import gsm8k as g
from nanochat_datasets import hub
from nanochat_datasets import options as o

from nanochat.core.data import DataError, Problem, message_text
from nanochat.core.data_refs import open_dataset


@pytest.fixture(scope="module")
def test_problems() -> list[Problem]:
    ds = g.gsm8k(o.Gsm8kOptions(source="bundled"))
    return [item for item, _ in ds.iter("test", shuffle=False)]


def test_all_1319_test_problems_parse(test_problems: list[Problem]) -> None:
    assert len(test_problems) == 1319
    calls = 0
    for problem in test_problems:
        assert problem.prompt[0]["role"] == "user" and problem.prompt[0]["content"]
        assert problem.answer and problem.answer.lstrip("-").replace(".", "").isdigit()
        parts = problem.solution["content"]
        assert isinstance(parts, list)
        for before, after in zip(parts, parts[1:], strict=False):
            if before["type"] == "python":
                assert after["type"] == "python_output"
                calls += 1
        assert "<<" not in "".join(p["text"] for p in parts if p["type"] == "text")
        # the reference solution earns the full reward
        assert problem.reward(message_text(problem.solution)) == 1.0
    assert calls > 3000


def test_calculator_parts_of_the_first_problem(test_problems: list[Problem]) -> None:
    parts = test_problems[0].solution["content"]
    assert parts[:4] == [
        {"type": "text", "text": "Janet sells 16 - 3 - 4 = "},
        {"type": "python", "text": "16-3-4"},
        {"type": "python_output", "text": "9"},
        {"type": "text", "text": "9 duck eggs a day.\nShe makes 9 * 2 = $"},
    ]
    assert test_problems[0].answer == "18"


@pytest.mark.parametrize(
    ("completion", "answer", "reward"),
    [
        ("so the total is 18.\n#### 18", "18", 1.0),
        ("#### 17", "18", 0.0),
        ("the answer is 18", "18", 0.0),  # no #### line
        ("#### 1,000", "1000", 1.0),
        ("#### 1,234,567", "1234567", 1.0),
        ("#### $18", "18", 1.0),
        ("#### $1,000.", "1000", 1.0),
        ("#### 18.", "18", 1.0),
        ("#### 18.00", "18", 1.0),
        ("#### -5", "-5", 1.0),
        ("#### -$5", "-5", 1.0),
        ("#### 5", "-5", 0.0),
        ("#### 2.5", "2.5", 1.0),
        ("#### 3 #### 4", "4", 1.0),  # the last marker counts
        ("####18", "18", 1.0),
        ("#### eighteen", "18", 0.0),
    ],
)
def test_reward_table(completion: str, answer: str, reward: float) -> None:
    assert g.gsm8k_reward(completion, answer) == reward


def test_local_jsonl_and_bad_rows(tmp_path: Path) -> None:
    registry = make_registry()
    good = write_jsonl(
        tmp_path / "train.jsonl", [{"question": "1+1?", "answer": "1+1=<<1+1=2>>2\n#### 2"}]
    )
    ds = open_dataset(f"gsm8k:{good}", registry)
    ((problem, _),) = list(ds.iter("train"))
    assert problem.answer == "2" and problem.reward("#### 2") == 1.0
    bad = write_jsonl(
        tmp_path / "bad" / "test.jsonl",
        [{"question": "q", "answer": "#### 1"}, {"question": "q", "answer": "none"}],
    )
    with pytest.raises(DataError, match=f"{bad} line 2"):
        list(open_dataset(f"gsm8k:{bad}", registry).iter("test"))


def test_offline_falls_back_to_the_bundled_split_once(monkeypatch, caplog) -> None:
    # the hub endpoint points at a closed local port: the probe fails fast, as offline
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(g, "_notice_given", False)
    hub.hub_reachable.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="nanochat_datasets.gsm8k"):
            for _ in range(2):
                ds = g.gsm8k(o.Gsm8kOptions())
                assert len(list(ds.iter("test"))) == 1319
        notices = [r for r in caplog.records if "out of reach" in r.getMessage()]
        assert len(notices) == 1
        with pytest.raises(DataError, match="train split needs"):
            list(g.gsm8k(o.Gsm8kOptions()).iter("train"))
    finally:
        hub.hub_reachable.cache_clear()
