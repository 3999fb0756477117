"""The `gsm8k` evaluator from the command line: offline on the bundled GSM8K test split,
pass@k, the per-problem jsonl, --source, and as a pipeline stage (Must-show 4 of issue 14)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import copy_run, run_cli
from nanochat_datasets.gsm8k import Gsm8k
from nanochat_datasets.options import Gsm8kOptions


@pytest.fixture(scope="module")
def home(arithmetic_chat_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_run(arithmetic_chat_home, tmp_path_factory.mktemp("gsm8k-eval"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_gsm8k_eval_runs_offline_on_the_bundled_test_split(home: Path) -> None:
    result = run_cli(["eval", "gsm8k", "--run", "a", "-o", "eval-gsm8k.limit=50"], home)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout)  # stdout is the JSON result alone
    assert metrics["problems"] == 50 and metrics["samples"] == 1
    p = metrics["accuracy"]
    assert 0.0 <= p <= 1.0
    assert metrics["stderr"] == pytest.approx(math.sqrt(p * (1 - p) / 50))
    path = Path(metrics["completions"])
    assert path.parent == home / "runs" / "a" / "eval-gsm8k"
    assert path.name == "sft_step_00000059_gsm8k_test.jsonl"
    rows = read_jsonl(path)
    reference = Gsm8k(Gsm8kOptions(source="bundled")).items("test")[:50]
    assert [r["index"] for r in rows] == list(range(50))
    assert [r["answer"] for r in rows] == [p.answer for p in reference]
    assert rows[0]["question"].startswith("Janet")
    too_long = 0
    for row in rows:
        [completion] = row["completions"]
        assert completion["reward"] in (0.0, 1.0) and row["score"] == completion["reward"]
        if completion["finish"] == "prompt_too_long":  # the test model's context is 128 ids
            too_long += 1
            assert completion["tokens"] == 0 and completion["reward"] == 0.0
        else:
            assert completion["tokens"] > 0
            assert completion["finish"] in ("stop", "length", "context")
    assert metrics["prompt_too_long"] == too_long < 50
    assert sum(r["score"] for r in rows) / 50 == pytest.approx(p)
    assert "Traceback" not in result.stderr


def test_pass_at_k_on_a_problems_dataset(home: Path) -> None:
    args = ["eval", "gsm8k", "--run", "a", "--source", "sft"]
    args += ["-o", "eval-gsm8k.dataset=arithmetic", "-o", "eval-gsm8k.limit=16"]
    args += ["-o", "eval-gsm8k.samples=4", "-o", "eval-gsm8k.temperature=1.0"]
    result = run_cli(args, home)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout)
    assert metrics["samples"] == 4 and metrics["problems"] == 16
    assert metrics["pass@4"] == metrics["accuracy"] >= metrics["pass@1"]
    rows = read_jsonl(Path(metrics["completions"]))
    assert Path(metrics["completions"]).name == "sft_step_00000059_arithmetic_val.jsonl"
    assert all(len(r["completions"]) == 4 for r in rows)
    solved = [any(c["reward"] == 1.0 for c in r["completions"]) for r in rows]
    assert sum(solved) / 16 == pytest.approx(metrics["accuracy"])
    single = sum(c["reward"] == 1.0 for r in rows for c in r["completions"]) / 64
    assert single == pytest.approx(metrics["pass@1"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--source", "nope"], "has no model stage 'nope'"),
        (["-o", "eval-gsm8k.samples=2"], "needs a temperature above 0"),
        (["-o", "eval-gsm8k.limit=-1"], "eval-gsm8k.limit"),
        (["-o", "eval-gsm8k.dataset=demo-text"], "demo-text"),
    ],
)
def test_bad_input_is_one_clear_line(home: Path, extra: list[str], message: str) -> None:
    result = run_cli(["eval", "gsm8k", "--run", "a", "-o", "eval-gsm8k.limit=2", *extra], home)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_gsm8k_eval_as_a_pipeline_stage(home: Path) -> None:
    args = ["run", "eval:gsm8k", "--run", "a", "-o", "eval-gsm8k.limit=8"]
    args += ["-o", "eval-gsm8k.dataset=arithmetic"]
    result = run_cli(args, home)
    assert result.returncode == 0, result.stderr[-3000:]
    done = json.loads((home / "runs" / "a" / "eval-gsm8k" / "done.json").read_text())
    assert done["result"]["problems"] == 8
    assert done["checkpoint"].endswith("sft/checkpoints/step_00000059")
    again = run_cli(args, home)  # the model did not change: skipped
    assert again.returncode == 0 and "skipped" in again.stderr + again.stdout
