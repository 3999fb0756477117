"""The `core` evaluator (issue 18, Must-show 5): a miniature CORE bundle written here (tasks of
each type), downloaded through `nanochat data download core-bundle` from a real HTTP server on
127.0.0.1, scored on a trained run; the centring and the CORE average match a hand computation,
and the per-example decisions match losses computed by hand from the model's logits."""

from __future__ import annotations

import functools
import http.server
import json
import random
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import copy_run, run_cli
from nanochat_evals.core_eval import CoreTask, load_bundle, render_prompts

from nanochat.core import special_tokens as st

MC = [
    {"query": "Question: What color is the sky?\nAnswer:", "choices": ["blue", "green", "red"]},
    {"query": "Question: How many legs has a cat?\nAnswer:", "choices": ["four", "two", "six"]},
    {"query": "Question: What is 2 + 2?\nAnswer:", "choices": ["4", "5", "22"]},
    {"query": "Question: Where do fish live?\nAnswer:", "choices": ["water", "trees", "sand"]},
    {"query": "Question: What do bees make?\nAnswer:", "choices": ["honey", "milk", "silk"]},
    {"query": "Question: What is ice made of?\nAnswer:", "choices": ["water", "salt", "air"]},
]
SCHEMA = [
    {"context_options": ["The trophy did not fit in the case because it", "The case did not fit"]},
    {"context_options": ["Sam gave Tom a gift because he", "Sam took a gift from Tom because he"]},
    {"context_options": ["The cat chased the mouse so it", "The mouse chased the cat so it"]},
    {"context_options": ["Anna thanked Maria because she", "Anna blamed Maria because she"]},
]
SCHEMA_CONTINUATIONS = ["was too big.", "was kind.", "ran away.", "had helped her."]
LM = [
    {"context": "One, two, three,", "continuation": "four"},
    {"context": "The United States of", "continuation": "America"},
    {"context": "Monday, Tuesday,", "continuation": "Wednesday"},
    {"context": "A, B, C,", "continuation": "D"},
    {"context": "1 + 1 =", "continuation": "2"},
]
CORE_YAML = """icl_tasks:
- label: mini_mc
  dataset_uri: mini/mc.jsonl
  num_fewshot: [0]
  icl_task_type: multiple_choice
- label: mini_mc_fewshot
  dataset_uri: mini/mc.jsonl
  num_fewshot: [2]
  icl_task_type: multiple_choice
  continuation_delimiter: ' '
- label: mini_schema
  dataset_uri: mini/schema.jsonl
  num_fewshot: [0]
  icl_task_type: schema
- label: mini_lm
  dataset_uri: mini/lm.jsonl
  num_fewshot: [1]
  icl_task_type: language_modeling
  continuation_delimiter: ' '
"""
BASELINES = {"mini_mc": 33.3333, "mini_mc_fewshot": 33.3333, "mini_schema": 50.0, "mini_lm": 0.0}


def write_bundle(root: Path) -> Path:
    """The miniature bundle as ``eval_bundle.zip`` under ``root``; returns the zip."""
    rng = random.Random(7)
    mc = []
    for item in MC:
        choices = list(item["choices"])
        rng.shuffle(choices)  # the right answer is not always first
        mc.append({**item, "choices": choices, "gold": choices.index(item["choices"][0])})
    schema = [
        {**s, "continuation": c, "gold": 0}
        for s, c in zip(SCHEMA, SCHEMA_CONTINUATIONS, strict=True)
    ]
    files = {
        "eval_bundle/core.yaml": CORE_YAML,
        "eval_bundle/eval_meta_data.csv": "Eval Task,Task Category,Random baseline\n"
        + "".join(f"{k},test,{v}\n" for k, v in BASELINES.items()),
        "eval_bundle/eval_data/mini/mc.jsonl": "".join(json.dumps(r) + "\n" for r in mc),
        "eval_bundle/eval_data/mini/schema.jsonl": "".join(json.dumps(r) + "\n" for r in schema),
        "eval_bundle/eval_data/mini/lm.jsonl": "".join(json.dumps(r) + "\n" for r in LM),
    }
    path = root / "eval_bundle.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


@pytest.fixture(scope="module")
def served_bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bundle's URL on a real HTTP server on 127.0.0.1."""
    folder = tmp_path_factory.mktemp("bundle-site")
    write_bundle(folder)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/eval_bundle.zip"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def home(arithmetic_chat_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_run(arithmetic_chat_home, tmp_path_factory.mktemp("core-eval"))


def test_download_unpacks_the_bundle_once(home: Path, served_bundle: str) -> None:
    args = ["data", "download", "core-bundle", "--url", served_bundle]
    result = run_cli(args, home)
    assert result.returncode == 0, result.stderr[-2000:]
    bundle = home / "data" / "eval_bundle"
    assert (bundle / "core.yaml").read_text() == CORE_YAML
    assert "downloaded; 3 task files" in result.stdout
    again = run_cli(args, home)
    assert again.returncode == 0 and "already present" in again.stdout
    missing = run_cli([*args[:3], "--url", served_bundle + ".nope", "--force"], home)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "failed" in missing.stderr and (bundle / "core.yaml").is_file()  # the old one stays


def mean_logprob(model, ids: list[int], start: int) -> float:
    """Mean log-probability of ``ids[start:]`` given what precedes them, computed directly."""
    with torch.no_grad():
        logprobs = F.log_softmax(model(torch.tensor([ids[:-1]]))[0].double(), -1)
    picked = [float(logprobs[i - 1, ids[i]]) for i in range(start, len(ids))]
    return sum(picked) / len(picked)


def test_core_matches_a_hand_computation(home: Path, served_bundle: str, monkeypatch) -> None:
    if not (home / "data" / "eval_bundle" / "core.yaml").is_file():
        assert (
            run_cli(["data", "download", "core-bundle", "--url", served_bundle], home).returncode
            == 0
        )
    result = run_cli(["eval", "core", "--run", "a", "--source", "pretrain"], home)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout)
    rows = [json.loads(line) for line in Path(metrics["items"]).read_text().splitlines()]
    results = json.loads(Path(metrics["results"]).read_text())
    assert metrics["tasks"] == 4 and metrics["examples"] == 6 + 6 + 4 + 5

    # centring and averaging, by hand from the per-example decisions and the baselines
    centred = {}
    for label, baseline in BASELINES.items():
        marks = [r["correct"] for r in rows if r["task"] == label]
        accuracy = sum(marks) / len(marks)
        b = baseline / 100
        centred[label] = (accuracy - b) / (1 - b)
        assert results["tasks"][label]["accuracy"] == pytest.approx(accuracy)
        assert results["tasks"][label]["centred"] == pytest.approx(centred[label])
    core = sum(centred.values()) / len(centred)
    assert metrics["core"] == pytest.approx(core) == pytest.approx(results["core"])
    report = run_cli(["report", "--run", "a"], home)
    assert report.returncode == 0, report.stderr[-2000:]
    [row] = [
        line
        for line in (home / "runs" / "a" / "report.md").read_text().splitlines()
        if line.startswith("| CORE |")
    ]
    assert row.split("|")[2].strip() not in ("", "—")  # the BASE column (pretrain) has CORE

    # the decisions themselves, from the model's logits (0-shot prompts written out here)
    from nanochat.core.chat import load_chat_model
    from nanochat.core.registry import Registry

    monkeypatch.setenv("NANOCHAT_HOME", str(home))
    loaded = load_chat_model(Registry.load(), "a", "pretrain", "cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    bos = tokenizer.special_tokens[st.BOS]
    tasks = {t.label: t for t in load_bundle(home / "data" / "eval_bundle")}
    mc_rows = {r["index"]: r for r in rows if r["task"] == "mini_mc"}
    for index, item in enumerate(tasks["mini_mc"].examples):
        prompts = [[bos, *tokenizer.encode(f"{item['query']} {c}")] for c in item["choices"]]
        shared = next(
            (k for k in range(min(map(len, prompts))) if len({p[k] for p in prompts}) > 1),
            min(map(len, prompts)),
        )
        means = [mean_logprob(model, p, shared) for p in prompts]
        assert mc_rows[index]["mean_logprobs"] == pytest.approx(means, abs=1e-4)
        assert mc_rows[index]["prediction"] == means.index(max(means))
    lm_rows = {r["index"]: r for r in rows if r["task"] == "mini_lm"}
    for index in range(len(tasks["mini_lm"].examples)):
        without, with_continuation = render_prompts(tasks["mini_lm"], index)
        ids = [bos, *tokenizer.encode(with_continuation)]
        start = len(tokenizer.encode(without)) + 1
        with torch.no_grad():
            greedy = model(torch.tensor([ids[:-1]]))[0].argmax(-1).tolist()
        assert lm_rows[index]["correct"] == (greedy[start - 1 :] == ids[start:])


def test_prompts_follow_dclm_templates() -> None:
    examples = [{"query": f"Q{i}", "choices": ["x", "y"], "gold": i % 2} for i in range(5)]
    task = CoreTask("t", "multiple_choice", 2, " ", 0.5, examples)
    prompts = render_prompts(task, 3)
    shots = random.Random(1234 + 3).sample([0, 1, 2, 4], 2)
    head = "".join(f"Q{i} {'xy'[i % 2]}\n\n" for i in shots)
    assert prompts == [f"{head}Q3 x", f"{head}Q3 y"]
    lm = CoreTask(
        "l", "language_modeling", 0, " ", 0.0, [{"context": " A B ", "continuation": "C"}]
    )
    assert render_prompts(lm, 0) == ["A B", "A B C"]
    schema = CoreTask(
        "s",
        "schema",
        0,
        " ",
        0.5,
        [{"context_options": ["a", "b"], "continuation": "c", "gold": 1}],
    )
    assert render_prompts(schema, 0) == ["a c", "b c"]


def test_bad_bundles_are_one_clear_line(home: Path, tmp_path: Path) -> None:
    result = run_cli(["eval", "core", "--run", "a", "-o", f"eval-core.bundle={tmp_path}"], home)
    assert result.returncode != 0 and "nanochat data download core-bundle" in result.stderr
    assert "Traceback" not in result.stderr
    if (home / "data" / "eval_bundle").is_dir():
        bad = run_cli(["eval", "core", "--run", "a", "-o", "eval-core.tasks=nope"], home)
        assert bad.returncode != 0 and "no task 'nope'" in bad.stderr
