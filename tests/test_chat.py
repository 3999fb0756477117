"""`nanochat chat`: one-shot answers, the interactive loop on stdin, and clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, cli_env, run_cli

from nanochat.core.chat import readable


@pytest.mark.slow
def test_one_shot_answer(chat_run) -> None:
    home, sites = chat_run
    args = ["chat", "--run", "c", "-p", "Who are you?", "--max-tokens", "12", "--seed", "1"]
    first = run_cli(args, home, sites)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.strip(), first.stdout
    again = run_cli(args, home, sites)
    assert again.stdout == first.stdout  # same seed, same answer
    greedy = run_cli([*args[:-2], "--temperature", "0"], home, sites)
    assert greedy.returncode == 0 and greedy.stdout.strip()


@pytest.mark.slow
def test_interactive_chat_on_stdin(chat_run) -> None:
    home, sites = chat_run
    proc = subprocess.run(
        [sys.executable, "-m", "nanochat", "chat", "--run", "c", "--max-tokens", "8"],
        input="Hello there\n/clear\nAnd you?\n\n/exit\nnever read\n",
        capture_output=True,
        text=True,
        env=cli_env(home, sites),
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("nanochat> ") == 2, proc.stdout
    assert "(conversation cleared)" in proc.stderr
    assert "sft/step_" in proc.stderr  # which checkpoint it talks with


@pytest.mark.slow
def test_chat_errors_are_one_line(chat_run) -> None:
    home, sites = chat_run
    cases = {
        ("chat", "--run", "nope", "-p", "hi"): "run 'nope' does not exist",
        ("chat", "--run", "c", "--source", "dpo", "-p", "hi"): "has no model stage 'dpo'",
    }
    for args, needle in cases.items():
        result = run_cli(list(args), home, sites)
        assert result.returncode in (1, 2), result.stderr
        assert needle in result.stderr and "Traceback" not in result.stderr
    pretrained = run_cli(["chat", "--run", "c", "--source", "pre", "-p", "hi"], home, sites)
    assert pretrained.returncode == 0, pretrained.stderr[-2000:]


def test_tool_calls_are_shown_readably() -> None:
    shown = readable("<|python_start|>6*7<|python_end|><|output_start|>42<|output_end|>ok")
    assert shown == "[calculator: 6*7] = 42 ok"
