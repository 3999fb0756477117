"""``nanochat datagen`` against a real ``nanochat serve`` on 127.0.0.1: 200 conversations with 16
requests in flight, killed and re-run to exactly 200 unique records; then the output trains:
``nanochat run sft -o sft.mixture=chat-jsonl:OUT/*.jsonl``.

The teacher is the tiny GPT chat model the suite shares (``arithmetic_chat_home``: depth 2,
fine-tuned on arithmetic only), so most identity answers are arithmetic babble; validation keeps
the complete, clean ones (about 60%) and rejects the rest by reason, which the test prints. (The
GRU test model of ``chat_run`` almost never ends an answer: 3 kept of 20,000.)"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, cli_env, copy_run, run_cli
from datagen_helpers import read_records
from server_helpers import ServerProcess

N = 200
IN_FLIGHT = 16


def _complete_lines(out: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in out.glob("*.jsonl")) if out.exists() else 0


@pytest.fixture(scope="module")
def generated(arithmetic_chat_home: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Run datagen against the served tiny model, SIGKILL it part-way, run it again."""
    home, sites = arithmetic_chat_home, []
    out = tmp_path_factory.mktemp("datagen-serve") / "out"
    server = ServerProcess(
        ["--workers", "2", "--max-batch", "8", "--queue-size", "64"], home, sites, run="a"
    ).wait_ready()
    args = [
        sys.executable,
        "-m",
        "nanochat",
        "datagen",
        "identity",
        "--endpoint",
        f"{server.url}/v1",
        "--model",
        "c",
        "-n",
        str(N),
        "--out",
        str(out),
        "--concurrency",
        str(IN_FLIGHT),
        "--max-jobs",
        "20000",
        "-o",
        "max_tokens=24",
        "-o",
        "system_prompt=false",
        "--json",
    ]
    env = cli_env(home, sites, NANOCHAT_PROGRESS="off")
    try:
        first = subprocess.Popen(
            args, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 240
        while _complete_lines(out) < N // 4 and first.poll() is None:
            assert time.time() < deadline, "the first run made too few records"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        before = read_records(out)
        result = subprocess.run(
            args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:] + server.log[-3000:]
    finally:
        server.stop()
    summary: dict[str, Any] = json.loads(result.stdout)
    print(f"\ndatagen against nanochat serve: {json.dumps(summary, sort_keys=True)}")
    return out, before, summary


def test_200_conversations_from_nanochat_serve_with_16_in_flight(generated) -> None:  # type: ignore[no-untyped-def]
    out, before, summary = generated
    records = read_records(out)
    assert N // 4 <= len(before) < N
    assert len(records) == N
    assert len({r["id"] for r in records}) == N
    assert len({json.dumps(r["messages"]) for r in records}) == N
    assert summary["records_before"] == len(before)
    assert summary["written"] == N - len(before)
    assert summary["max_in_flight"] == IN_FLIGHT
    # a tiny model's answers are mostly rejected; every rejection has a named reason
    assert (
        summary["jobs"] == summary["accepted"] + summary["rejected_total"] + summary["failed_total"]
    )
    assert summary["failed_total"] == 0


def test_the_generated_jsonl_trains_with_sft(
    generated, arithmetic_chat_home, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    out, _, _ = generated
    home = copy_run(arithmetic_chat_home, tmp_path / "home")
    shutil.rmtree(home / "runs" / "a" / "sft")  # train sft again, on the generated data
    data = f"chat-jsonl:{out}/*.jsonl"
    result = run_cli(
        [
            "run",
            "sft",
            "--run",
            "a",
            "-o",
            f"sft.mixture={data}",
            "-o",
            f"sft.val_mixture={data}",
            "-o",
            "chat-jsonl.val_fraction=0.1",
            "-o",
            "sft.max_steps=3",
        ],
        home,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    done = json.loads((home / "runs" / "a" / "sft" / "done.json").read_text())
    print(f"\nsft on the generated data: {json.dumps(done['result'], sort_keys=True)}")
    assert done["result"]["steps"] == 3, done
