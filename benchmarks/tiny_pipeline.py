"""Time the `tiny` preset end to end and check what issue 5 asks of it.

Runs ``nanochat run tokenizer pretrain --preset tiny`` in a fresh ``NANOCHAT_HOME`` (offline, on
this machine's CPUs), then the same command again, and prints the wall times, the validation
bits-per-byte curve and the final samples. Exits non-zero when the run takes 10 minutes or more,
when validation bits per byte does not fall, or when the re-run does any work::

    uv run python benchmarks/tiny_pipeline.py [-o pretrain.max_steps=...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIMIT_S = 600.0


def run(args: list[str], home: Path) -> float:
    """Run ``nanochat ARGS`` with ``NANOCHAT_HOME=home``; return its wall time."""
    env = {**os.environ, "NANOCHAT_HOME": str(home)}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "nanochat", *args], env=env, check=True, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def main() -> int:
    """Run the preset twice and report; the exit status says whether every check held."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--option", action="append", default=[], help="extra overrides")
    extra = [x for o in parser.parse_args().option for x in ("-o", o)]
    home = Path(tempfile.mkdtemp(prefix="nanochat-tiny-"))
    command = ["run", "tokenizer", "pretrain", "--preset", "tiny", "--run", "tiny", *extra]
    first = run(command, home)
    metrics_path = home / "runs" / "tiny" / "metrics.jsonl"
    before = len(metrics_path.read_text().splitlines())
    second = run(command, home)
    records = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    rerun = records[before:]
    curve = [(0, r["base_val_bpb"]) for r in records if "base_val_bpb" in r][:1]
    curve += [(r["step"] + 1, r["val_bpb"]) for r in records if "val_bpb" in r and "step" in r]
    tokenizer = next(r for r in records if "bytes_per_token" in r)
    samples = [r["text"] for r in records if r.get("event") == "sample" and "step" not in r]
    print(f"tokenizer: {tokenizer['train_seconds']} s, {tokenizer['bytes_per_token']} bytes/token")
    print(f"first run: {first:.1f} s (limit {LIMIT_S:.0f} s); re-run: {second:.1f} s")
    print("validation bits per byte: " + ", ".join(f"step {s}: {b:.3f}" for s, b in curve))
    for text in samples:
        print("sample:", text.replace("\n", " / "))
    did_work = [r for r in rerun if r.get("event") not in ("skipped",)]
    checks = {
        "under 10 minutes": first < LIMIT_S,
        "bits per byte falls": len(curve) >= 2 and curve[-1][1] < curve[0][1],
        "re-run does nothing": not did_work,
    }
    for name, ok in checks.items():
        print(f"{'ok ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
