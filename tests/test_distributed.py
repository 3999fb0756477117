"""torchrun with 2 CPU processes (gloo): all-reduce works and only rank 0 writes shared files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO, cli_env


def test_torchrun_two_processes_all_reduce_and_rank0_writes(home: Path, plugin_sites) -> None:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "nanochat", "--", "run", "hello", "allreduce", "--run", "d", "--device", "cpu",
        "-o", "allreduce.scale=2",
    ]
    env = cli_env(home, [plugin_sites["hello"]], OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = home / "runs" / "d"
    assert sorted(p.name for p in run_dir.glob("rank*.seen")) == ["rank0.seen", "rank1.seen"]
    answer = json.loads((run_dir / "allreduce" / "allreduce.json").read_text())
    assert answer == {"sum": 6.0, "world_size": 2}  # (1 + 2) * scale 2
    assert (run_dir / "hello-runs.log").read_text() == "ran\n"  # stage files: rank 0 only
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    starts = [r["stage"] for r in records if r.get("event") == "start"]
    assert starts == ["hello", "allreduce"]  # one logger, on rank 0
    done = json.loads((run_dir / "allreduce" / "done.json").read_text())
    assert done["result"] == {"sum": 6.0, "world_size": 2}
    assert (run_dir / "pipeline.json").is_file()
