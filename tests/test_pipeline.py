"""The pipeline runner: pipeline.json, skipping finished stages, resuming after SIGKILL, hooks."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from conftest import CHAT_TRAIN, REPO, kill_when_checkpointed, run_cli, run_in_process


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_pipeline_json_records_the_run(home: Path, plugin_sites) -> None:
    result = run_cli(
        [
            "run",
            "hello",
            "count",
            "--run",
            "p",
            "--preset",
            "hello-fast",
            "-o",
            "hello.greeting=hey",
        ],
        home,
        [plugin_sites["hello"]],
    )
    assert result.returncode == 0, result.stderr
    pipeline = json.loads((home / "runs" / "p" / "pipeline.json").read_text())
    assert [s["name"] for s in pipeline["stages"]] == ["hello", "count"]
    assert pipeline["stages"][0]["plugin"] == "nanochat-hello"
    assert pipeline["stages"][0]["options"] == {"greeting": "hey", "times": 1}
    assert pipeline["stages"][1]["options"] == {"steps": 3, "sleep": 0.0}
    assert pipeline["preset"] == "hello-fast"
    assert pipeline["overrides"] == ["hello.greeting=hey"]
    assert pipeline["plugins"]["nanochat-hello"]["version"] == "0.3.1"
    assert pipeline["plugins"]["nanochat"]["version"]
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    if commit:
        assert pipeline["git_commit"].startswith(commit)


def test_rerun_skips_finished_stages(home: Path, plugin_sites) -> None:
    args = ["run", "hello", "count", "--run", "s", "-o", "count.steps=2", "-o", "count.sleep=0"]
    sites = [plugin_sites["hello"]]
    for _ in range(2):
        result = run_cli(args, home, sites)
        assert result.returncode == 0, result.stderr
    run_dir = home / "runs" / "s"
    assert (run_dir / "hello-runs.log").read_text() == "ran\n"
    assert read_jsonl(run_dir / "count" / "starts.jsonl") == [{"start": 0}]
    events = read_jsonl(run_dir / "metrics.jsonl")
    skipped = [e["stage"] for e in events if e.get("event") == "skipped"]
    assert skipped == ["hello", "count"]


def test_sigkill_in_second_stage_then_rerun_resumes(home: Path, plugin_sites) -> None:
    sites = [plugin_sites["hello"]]
    args = ["run", "hello", "count", "--run", "k", "-o", "count.steps=40", "-o", "count.sleep=0.1"]
    checkpoints = home / "runs" / "k" / "count" / "checkpoints"
    returncode, _ = kill_when_checkpointed(args, home, checkpoints, 5, sites, timeout=120)
    assert returncode == -signal.SIGKILL
    run_dir = home / "runs" / "k"
    assert not (run_dir / "count" / "done.json").exists()

    result = run_cli(args, home, sites)
    assert result.returncode == 0, result.stderr
    assert (run_dir / "hello-runs.log").read_text() == "ran\n"  # first stage not redone
    starts = [s["start"] for s in read_jsonl(run_dir / "count" / "starts.jsonl")]
    assert starts[0] == 0 and len(starts) == 2 and starts[1] >= 5
    done = json.loads((run_dir / "count" / "done.json").read_text())
    assert done["result"]["total"] == 40.0  # counted every step exactly once
    assert done["result"]["resumed_from"] == starts[1]


def test_broadcast_hooks_see_stages_and_metrics(home: Path, plugin_sites) -> None:
    result = run_cli(
        ["run", "hello", "count", "--run", "h", "--preset", "hello-fast"],
        home,
        [plugin_sites["hello"]],
    )
    assert result.returncode == 0, result.stderr
    events = read_jsonl(home / "runs" / "h" / "hello-events.jsonl")
    assert [(e["hook"], e["stage"]) for e in events] == [
        ("stage_start", "hello"),
        ("stage_end", "hello"),
        ("stage_start", "count"),
        ("stage_end", "count"),
    ]
    assert events[3]["result"] == {"total": 3.0, "resumed_from": 0}
    seen = read_jsonl(home / "hello-metrics-h.jsonl")
    logged = read_jsonl(home / "runs" / "h" / "metrics.jsonl")
    assert seen == logged
    assert [r["step"] for r in logged if r.get("stage") == "count" and "step" in r] == [0, 1, 2]


def test_stage_errors_are_one_line(home: Path, plugin_sites, monkeypatch, capsys) -> None:
    sites = [plugin_sites["hello"]]
    cases = [
        (["run", "helo", "--run", "u"], "did you mean: hello"),
        (["run", "hello", "--run", "u", "-o", "hello.times=many"], "expected int"),
        (["run", "hello", "--run", "u", "-o", "hello.tims=2"], "did you mean: times"),
        (["run", "hello", "--run", "u", "--log", "nope"], "unknown logger 'nope'"),
        (["run", "eval:nope", "--run", "u"], "unknown eval 'nope'"),
        (["list", "widgets"], "unknown component kind"),
    ]
    for args, needle in cases:
        code, _, err = run_in_process(args, sites, monkeypatch, capsys)
        assert code == 2, (args, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and needle in lines[0], (args, err)
        assert "Traceback" not in err


# the shared tiny GRU run's options (model, tokenizer, stage options), plus the eval's
GRU_SMALL = [*CHAT_TRAIN[CHAT_TRAIN.index("--model") :], "-o", "eval-bpb.tokens=256"]


def test_an_eval_after_each_model_stage_scores_that_stage(home: Path, plugin_sites) -> None:
    stages = ["tokenizer", "pretrain", "eval:bpb", "sft", "eval:bpb"]
    sites = [plugin_sites["gru"]]
    result = run_cli(["run", *stages, "--run", "e2", *GRU_SMALL], home, sites)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = home / "runs" / "e2" / "eval-bpb"
    for stage in ("pretrain", "sft"):
        done = json.loads((folder / f"done-{stage}.json").read_text())
        assert Path(done["checkpoint"]).parent.parent.name == stage
    scored = [r["scored"] for r in read_jsonl(folder.parent / "metrics.jsonl") if "scored" in r]
    assert [s.split("/")[0] for s in scored] == ["pretrain", "sft"]
    # resumed with both models trained, the first eval still scores pretrain's model, once
    (folder / "done-pretrain.json").unlink()
    again = run_cli(["run", *stages, "--run", "e2", *GRU_SMALL], home, sites)
    assert again.returncode == 0, again.stderr[-3000:]
    scored = [r["scored"] for r in read_jsonl(folder.parent / "metrics.jsonl") if "scored" in r]
    assert [s.split("/")[0] for s in scored] == ["pretrain", "sft", "pretrain"]
