"""Everyday use: progress that fits a log file, commands that start without torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env, run_cli

HEAVY_CHECK = (
    "import sys\n"
    "from nanochat.core.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit as exit:\n"
    "    print('CODE', exit.code, file=sys.stderr)\n"
    "print('TORCH', 'torch' in sys.modules, file=sys.stderr)\n"
)


def imports_torch(args: list[str], home: Path, sites: list[Path]) -> tuple[bool, str]:
    result = subprocess.run(
        [sys.executable, "-c", HEAVY_CHECK, *args],
        capture_output=True,
        text=True,
        env=cli_env(home, sites),
        timeout=300,
    )
    return "TORCH True" in result.stderr, result.stderr


def test_quick_commands_do_not_import_torch(home: Path, plugin_sites) -> None:
    sites = [plugin_sites["hello"]]
    first = run_cli(["run", "hello", "--run", "fast"], home, sites)
    assert first.returncode == 0, first.stderr
    cases = {
        "no-op re-run": ["run", "hello", "--run", "fast"],
        "torch-free stage": ["run", "hello", "--run", "fresh"],
        "bad option": ["run", "tokenizer", "pretrain", "--run", "x", "-o", "model.depth=0"],
        "missing run": ["eval", "bpb", "--run", "nothere"],
        "unknown stage": ["run", "pretrian", "--run", "x"],
    }
    for what, args in cases.items():
        heavy, stderr = imports_torch(args, home, sites)
        assert not heavy, (what, stderr)
        assert "CODE" in stderr, (what, stderr)


def progress_lines(text: str, desc: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"[{desc}] ")]


@pytest.mark.slow
def test_progress_in_a_log_is_plain_periodic_lines(home: Path, plugin_sites) -> None:
    sites = [plugin_sites["gru"]]
    args = [
        "run",
        "tokenizer",
        "pretrain",
        "--run",
        "log",
        "--model",
        "gru",
        "--tokenizer",
        "bytes",
        "-o",
        "model.sequence_len=32",
        "-o",
        "pretrain.max_steps=40",
        "-o",
        "pretrain.device_batch_size=2",
        "-o",
        "pretrain.eval_every=20",
        "-o",
        "pretrain.eval_tokens=256",
        "-o",
        "pretrain.sample_tokens=2",
        "-o",
        "tokenizer.max_chars=5000",
    ]
    result = run_cli(args, home, sites, NANOCHAT_PROGRESS_INTERVAL="0.05")
    assert result.returncode == 0, result.stderr[-3000:]
    everything = result.stdout + result.stderr
    assert max(len(line) for line in everything.splitlines()) < 400  # no redrawn bar
    assert "\r" not in everything
    lines = progress_lines(result.stderr, "pretrain")
    assert len(lines) >= 3, result.stderr[-2000:]
    assert all(len(line) <= 160 for line in lines)
    shape = re.compile(
        r"^\[pretrain\] \d+/40 steps \(\d+%\) \| [\d.e+]+ steps/s \| ETA \w+ \| loss "
    )
    assert all(shape.match(line) for line in lines), lines[:3]
    assert lines[-1].startswith("[pretrain] 40/40 steps (100%)")
    assert len(set(lines)) == len(lines)
    # per-step records are left to the progress lines: no step printed twice
    assert not re.search(r"^\[pretrain\] step \d+ \|", result.stdout, re.M), result.stdout[-2000:]
    assert "[pretrain] eval step 19 | val_bpb " in result.stdout  # evaluations are still printed
    assert "[tokenizer] stage 1/2" in result.stdout and "[pretrain] stage 2/2" in result.stdout
    evaluated = run_cli(
        ["eval", "bpb", "--run", "log", "-o", "eval-bpb.tokens=2048"],
        home,
        sites,
        NANOCHAT_PROGRESS_INTERVAL="0",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    eval_lines = progress_lines(evaluated.stderr, "eval bpb")
    assert eval_lines and eval_lines[-1].startswith("[eval bpb] ")
    assert re.match(r"^\[eval bpb\] (\d+)/\1 batches \(100%\)", eval_lines[-1]), eval_lines
