"""One writer per run, and resumes that check what they resume (issue 10, items 4 and 5)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, cli_env, run_cli

TINY = [
    "-o",
    "tokenizer.vocab_size=512",
    "-o",
    "tokenizer.max_chars=200000",
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
    "pretrain.eval_tokens=512",
    "-o",
    "pretrain.sample_tokens=4",
    "-o",
    "pretrain.max_steps=4",
    "-o",
    "pretrain.checkpoint_every=2",
    "-o",
    "pretrain.eval_every=2",
    "-o",
    "pretrain.keep_checkpoints=5",
]


def start(args: list[str], home: Path, sites: list[Path]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nanochat", *args],
        env=cli_env(home, sites),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_one_writer_per_run_and_stale_locks_are_taken_over(home: Path, plugin_sites) -> None:
    sites = [plugin_sites["hello"]]
    args = ["run", "count", "--run", "locked", "-o", "count.steps=200", "-o", "count.sleep=0.05"]
    first = start(args, home, sites)
    try:
        starts = home / "runs" / "locked" / "count" / "starts.jsonl"
        deadline = time.time() + 60
        while time.time() < deadline and not starts.exists():
            time.sleep(0.05)
        assert starts.exists(), first.stderr.read() if first.poll() is not None else "no start"
        began = time.perf_counter()
        second = run_cli(args, home, sites)
        assert time.perf_counter() - began < 20
        assert second.returncode == 1
        line = second.stderr.strip().splitlines()[-1]
        assert line.startswith("Error: run 'locked' is in use by pid ")
        assert f"pid {first.pid} on host " in line and "nanochat run count" in line
        assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first one is untouched
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    # the lock of a killed process is stale: the next command takes over and finishes the run
    quick = ["run", "count", "--run", "locked", "-o", "count.steps=200", "-o", "count.sleep=0"]
    third = run_cli(quick, home, sites)
    assert third.returncode == 0, third.stderr
    assert (home / "runs" / "locked" / "count" / "done.json").is_file()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("safety")
    result = run_cli(["run", "tokenizer", "pretrain", "--run", "base", *TINY], home)
    assert result.returncode == 0, result.stderr[-3000:]
    return home


def interrupted_copy(trained: Path, tmp_path: Path, name: str, keep_last: bool = False) -> Path:
    """A copy of the trained run whose pretrain looks interrupted (after step 1, or 3)."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(trained / "runs" / "base", home / "runs" / name)
    stage = home / "runs" / name / "pretrain"
    (stage / "done.json").unlink()
    if not keep_last:
        shutil.rmtree(stage / "checkpoints" / "step_00000003")
    return home


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.slow
def test_resume_with_another_depth_is_refused(trained: Path, tmp_path: Path) -> None:
    home = interrupted_copy(trained, tmp_path, "deeper")
    result = run_cli(["run", "pretrain", "--run", "deeper", "-o", "model.depth=3"], home)
    line = one_line_error(result)
    assert "pretrain cannot resume from pretrain/step_00000001" in line
    assert "n_layer 2 -> 3" in line and "model" in line
    # the run remembers the last options given: setting the old depth again resumes
    again = run_cli(["run", "pretrain", "--run", "deeper", "-o", "model.depth=2"], home)
    assert again.returncode == 0, again.stderr[-2000:]


@pytest.mark.slow
def test_resume_after_retraining_the_tokenizer_is_refused(trained: Path, tmp_path: Path) -> None:
    import shutil

    home = interrupted_copy(trained, tmp_path, "retok")
    shutil.rmtree(home / "runs" / "retok" / "tokenizer")  # the tokenizer and its done.json
    retrain = run_cli(
        ["run", "tokenizer", "--run", "retok", "-o", "tokenizer.vocab_size=600"], home
    )
    assert retrain.returncode == 0, retrain.stderr[-2000:]
    line = one_line_error(run_cli(["run", "pretrain", "--run", "retok"], home))
    assert "has 600 ids, but checkpoint pretrain/step_00000001 was trained with 512" in line


@pytest.mark.slow
def test_corrupt_newest_checkpoint_names_the_older_valid_one(trained: Path, tmp_path: Path) -> None:
    home = interrupted_copy(trained, tmp_path, "corrupt", keep_last=True)
    checkpoints = home / "runs" / "corrupt" / "pretrain" / "checkpoints"
    newest = checkpoints / "step_00000003"
    (newest / "meta.json").write_text("{not json")
    result = run_cli(["run", "pretrain", "--run", "corrupt"], home)
    line = one_line_error(result)
    assert str(newest / "meta.json") in line
    assert "the older checkpoint pretrain/step_00000001 is valid" in line
    assert f"delete {newest}" in line
    record = json.loads((home / "runs" / "corrupt" / "pipeline.json").read_text())
    assert record["commands"][-1]["labels"] == ["pretrain"]
