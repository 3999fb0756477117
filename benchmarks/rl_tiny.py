"""Time `rl --preset tiny` on `arithmetic` and report held-out pass@1 before and after.

Copies a run that has finished ``nanochat run tokenizer pretrain midtrain sft --preset tiny``
(from ``--home``, default ``$NANOCHAT_HOME``) into a fresh home, runs
``nanochat run rl --preset tiny`` there (offline, on this machine's CPUs), and prints the wall
time, the steps done, the training reward of the first and last steps, and held-out pass@1 at
the start and the end with the number of problems and the standard error. Exits non-zero when
the stage takes 10 minutes or more or pass@1 rises by less than 10 points::

    uv run python benchmarks/rl_tiny.py --run t [--home DIR] [-o rl.KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIMIT_S = 600.0
MIN_RISE = 0.10


def main() -> int:
    """Run the stage on a copy of the run and report; the exit status says whether it held."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="t", help="the tiny run with a finished sft stage")
    parser.add_argument("--home", default=os.environ.get("NANOCHAT_HOME", "~/.cache/nanochat"))
    parser.add_argument("-o", "--option", action="append", default=[], help="extra overrides")
    args = parser.parse_args()
    source = Path(args.home).expanduser() / "runs" / args.run
    if not (source / "sft" / "done.json").is_file():
        print(f"{source} has no finished sft stage; run the tiny pipeline first", file=sys.stderr)
        return 2
    home = Path(tempfile.mkdtemp(prefix="nanochat-rl-tiny-"))
    shutil.copytree(source, home / "runs" / args.run, ignore=shutil.ignore_patterns("rl", ".lock"))
    metrics = home / "runs" / args.run / "metrics.jsonl"
    earlier = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
    extra = [x for o in args.option for x in ("-o", o)]
    command = ["run", "rl", "--preset", "tiny", "--run", args.run, *extra]
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "nanochat", *command],
        env={**os.environ, "NANOCHAT_HOME": str(home)},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - started
    result = json.loads((home / "runs" / args.run / "rl" / "done.json").read_text())["result"]
    records = [json.loads(line) for line in metrics.read_text().splitlines()[earlier:]]
    rewards = [r["reward"] for r in records if r.get("stage") == "rl" and "reward" in r]
    first, last = rewards[:10], rewards[-10:]
    n = int(result["eval_problems"])
    before, after = result["base_pass@1"], result["pass@1"]
    print(f"nanochat {' '.join(command)}: {seconds:.0f} s, {result['steps']} steps")
    print(f"training reward: first 10 steps {sum(first) / len(first):.3f}, ", end="")
    print(f"last 10 steps {sum(last) / len(last):.3f}")
    print(
        f"held-out pass@1 on {n} problems: {before:.3f} +- {result['base_pass@1_stderr']:.3f}",
        end="",
    )
    print(
        f" -> {after:.3f} +- {result['pass@1_stderr']:.3f} ({100 * (after - before):+.1f} points)"
    )
    shutil.rmtree(home, ignore_errors=True)
    return 0 if seconds < LIMIT_S and after - before >= MIN_RISE else 1


if __name__ == "__main__":
    sys.exit(main())
