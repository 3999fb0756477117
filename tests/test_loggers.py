"""The built-in loggers: console lines, metrics.jsonl, and wandb offline (never prompting)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO, cli_env, run_cli

from nanochat.plugins.loggers.console import format_record
from nanochat.plugins.loggers.jsonl import JsonlLogger
from nanochat.plugins.loggers.options import JsonlOptions
from nanochat.plugins.loggers.wandb_logger import choose_mode


def test_console_format() -> None:
    line = format_record({"stage": "pretrain", "step": 10, "loss": 3.14159, "lr": 0.02})
    assert line == "[pretrain] step 10 | loss 3.142 | lr 0.02"
    assert format_record({"stage": "sft", "event": "start"}) == "[sft] start"


def test_jsonl_appends_and_flushes(tmp_path: Path) -> None:
    logger = JsonlLogger(JsonlOptions())
    logger.start(tmp_path, "r", {})
    logger.log({"step": 1, "loss": 2.0})
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "loss": 2.0}
    logger.finish()


def test_wandb_mode_choice(monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert choose_mode("") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert choose_mode("") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert choose_mode("") == "disabled"
    assert choose_mode("offline") == "offline"


def test_wandb_offline_run_writes_its_files(home: Path, plugin_sites) -> None:
    env = {"WANDB_MODE": "offline"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nanochat",
            "run",
            "hello",
            "count",
            "--run",
            "w",
            "--log",
            "wandb",
            "--preset",
            "hello-fast",
        ],
        env=cli_env(home, [plugin_sites["hello"]], **env),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    offline = list((home / "runs" / "w" / "wandb").glob("offline-run-*"))
    assert offline, list((home / "runs" / "w").iterdir())
    assert any(p.suffix == ".wandb" for p in offline[0].iterdir())
    pipeline = json.loads((home / "runs" / "w" / "pipeline.json").read_text())
    assert pipeline["loggers"] == ["console", "jsonl", "wandb"]


def test_console_logger_prints_progress(home: Path, plugin_sites) -> None:
    result = run_cli(
        ["run", "count", "--run", "c", "--preset", "hello-fast"], home, [plugin_sites["hello"]]
    )
    assert result.returncode == 0, result.stderr
    assert "[count] step 2 | total 3" in result.stdout
