"""`nanochat speedrun`: the preset's pipeline as data, a miniature speedrun to the report, and
interruptions (SIGKILL, SIGINT) that a second and third run finish without redoing stages."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, cli_env, run_cli, run_in_process

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Smaller than `tiny`: a depth-2 model on 128-token rows, a few steps per stage.
MINI = [
    "--run",
    "mini",
    *("-o", "tokenizer.max_chars=300000", "-o", "tokenizer.vocab_size=512"),
    *("-o", "model.depth=2", "-o", "model.sequence_len=128"),
    *("-o", "pretrain.max_steps=16", "-o", "pretrain.device_batch_size=8"),
    *("-o", "pretrain.total_batch_tokens=1024", "-o", "pretrain.eval_every=12"),
    *("-o", "pretrain.eval_tokens=2048", "-o", "pretrain.checkpoint_every=4"),
    *("-o", "eval-bpb.tokens=2048"),
    *("-o", "midtrain.max_steps=6", "-o", "midtrain.device_batch_size=8"),
    *("-o", "midtrain.total_batch_tokens=1024", "-o", "midtrain.eval_every=3"),
    *("-o", "midtrain.eval_conversations=8", "-o", "midtrain.checkpoint_every=3"),
    *("-o", "sft.max_steps=6", "-o", "sft.device_batch_size=4", "-o", "sft.eval_every=3"),
    *("-o", "sft.eval_conversations=8", "-o", "sft.checkpoint_every=2"),
    *("-o", "sft.overflow=truncate"),
    *("-o", "eval-gsm8k.limit=8", "-o", "eval-gsm8k.max_new_tokens=24"),
    *("-o", "rl.max_steps=2", "-o", "rl.prompts_per_step=4", "-o", "rl.samples=2"),
    *("-o", "rl.max_new_tokens=24", "-o", "rl.eval_every=1", "-o", "rl.eval_problems=4"),
    *("-o", "rl.checkpoint_every=1"),
]


def test_the_pipeline_is_data(home: Path, monkeypatch, capsys) -> None:
    code, out, err = run_in_process(["speedrun", "--print", "--run", "x"], [], monkeypatch, capsys)
    assert code == 0, err
    assert out.strip() == (
        "nanochat run tokenizer pretrain eval:bpb midtrain eval:gsm8k sft eval:gsm8k rl "
        "eval:gsm8k --preset tiny --run x"
    )
    code, out, _ = run_in_process(
        ["speedrun", "--preset", "d20", "--print"], [], monkeypatch, capsys
    )
    assert out.startswith("nanochat run download-fineweb tokenizer pretrain")
    code, _, err = run_in_process(["speedrun", "--preset", "tiyn"], [], monkeypatch, capsys)
    assert code != 0 and err.startswith("Error: unknown preset 'tiyn'")
    assert not (home / "runs" / "x").exists()


def _start(home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nanochat", "speedrun", *MINI],
        env=cli_env(home, NANOCHAT_PROGRESS="lines"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _interrupt_at(home: Path, checkpoints: Path, count: int, sig: signal.Signals) -> int:
    """Start the speedrun; send ``sig`` once ``checkpoints`` holds ``count`` checkpoints."""
    proc = _start(home)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(checkpoints.glob("step_*"))) < count:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err
    return proc.returncode


@pytest.mark.slow
def test_mini_speedrun_survives_kill_and_ctrl_c_then_reports(home: Path) -> None:
    run_dir = home / "runs" / "mini"
    started = time.time()
    # SIGKILL in pretraining, then Ctrl-C in SFT: each time the next run picks up
    assert _interrupt_at(home, run_dir / "pretrain" / "checkpoints", 1, signal.SIGKILL) != 0
    tokenizer_done = (run_dir / "tokenizer" / "done.json").stat().st_mtime_ns
    assert not (run_dir / "pretrain" / "done.json").exists()
    assert _interrupt_at(home, run_dir / "sft" / "checkpoints", 1, signal.SIGINT) == 130
    pretrain_done = (run_dir / "pretrain" / "done.json").stat().st_mtime_ns
    finished = run_cli(["speedrun", *MINI], home)
    took = time.time() - started
    assert finished.returncode == 0, finished.stderr[-3000:]
    # sized to finish in well under 5 minutes on a quiet 2-core machine (three process starts
    # included); the bound leaves room for a loaded one
    assert took < 600, f"the miniature speedrun took {took:.0f} s"
    # finished stages were not redone
    assert (run_dir / "tokenizer" / "done.json").stat().st_mtime_ns == tokenizer_done
    assert (run_dir / "pretrain" / "done.json").stat().st_mtime_ns == pretrain_done
    assert "stage 2/9 pretrain: finished earlier" in finished.stderr
    assert "stage 6/9 sft: running" in finished.stderr
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("event") == "resume" and r["stage"] == "sft"]
    # the three problem evaluations scored midtrain, sft and rl
    for stage in ("midtrain", "sft", "rl"):
        assert (run_dir / "eval-gsm8k" / f"done-{stage}.json").is_file()
    # the report: path on stdout, the card's columns and rows, valid plots
    said = [line for line in finished.stdout.splitlines() if line.startswith("Report:")]
    report = Path(said[0].removeprefix("Report:").strip())
    assert report == run_dir / "report.md"
    text = report.read_text()
    assert "| metric | BASE | MID | SFT | RL |" in text
    bpb_row = next(line for line in text.splitlines() if line.startswith("| validation bits/byte"))
    assert float(bpb_row.split("|")[2]) > 0
    accuracy = next(line for line in text.splitlines() if "gsm8k accuracy (arithmetic)" in line)
    assert accuracy.count("±") == 3  # MID, SFT and RL scored
    plots = sorted((run_dir / "report").glob("*.png"))
    assert [p.name for p in plots] == ["rewards.png", "training_loss.png", "validation.png"]
    for plot in plots:
        data = plot.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert 'nanochat chat --run mini -p "What is 12 * 7?"' in finished.stdout


def test_time_left_rescales_only_on_enough_evidence(monkeypatch) -> None:
    """The estimate of the rest follows the preset's figures until stages estimated at a minute
    or more have finished; then it scales by how fast this machine ran them."""
    from nanochat.core import speedrun_progress
    from nanochat.core.progress import format_duration

    clock = [0.0]
    monkeypatch.setattr(speedrun_progress.time, "monotonic", lambda: clock[0])
    lines: list[str] = []
    progress = speedrun_progress.SpeedrunProgress(
        "r", ["a", "b", "c"], ["a", "b", "c"], {"a": 10, "b": 100, "c": 300}, lines.append
    )

    def stage(scope: str, seconds: float) -> None:
        progress.nanochat_metrics("r", {"event": "start", "stage": scope})
        clock[0] += seconds
        progress.nanochat_metrics("r", {"event": "end", "stage": scope})

    stage("a", 1.0)  # 10x faster than estimated, but only 10 s of evidence
    assert lines[-1].endswith("about 6m40s left"), lines[-1]  # 100 + 300 s as estimated
    stage("b", 200.0)  # 110 s estimated, 201 s spent: 1.83x slower
    assert lines[-1].endswith(f"about {format_duration(300 * 201 / 110)} left")
