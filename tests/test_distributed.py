"""torchrun with 2 CPU processes (gloo): all-reduce works and only rank 0 writes shared files."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_torchrun


def test_torchrun_two_processes_all_reduce_and_rank0_writes(home: Path, plugin_sites) -> None:
    result = run_torchrun(
        2,
        ["run", "hello", "allreduce", "--run", "d", "--device", "cpu", "-o", "allreduce.scale=2"],
        home,
        [plugin_sites["hello"]],
        timeout=300,
    )
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
