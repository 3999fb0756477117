"""Time `dpo --preset tiny` with on-policy pairs and report held-out pass@1 before and after.

Copies a run that has finished ``nanochat run tokenizer pretrain midtrain sft --preset tiny``
(from ``--home``, default ``$NANOCHAT_HOME``) into a fresh home, runs ``nanochat run dpo
--preset tiny`` there (offline, on this machine's CPUs), and prints the pairs it built, greedy
pass@1 on the held-out ``arithmetic`` problems of the starting model and of the trained one
(each with its standard error and the number of problems), and the wall time. Exits non-zero
when pass@1 does not rise or the stage takes 10 minutes or more::

    uv run python benchmarks/dpo_tiny.py --run t [--home DIR] [-o dpo.KEY=VALUE ...]

The same script measures any run with a chat model and a problems dataset, e.g. the small
easy-arithmetic run of the tests: ``--run a --no-preset -o dpo.prompts=256 ...``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIMIT_S = 600.0


def main() -> int:
    """Run the stage on a copy of the run and report; the exit status says whether it held."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="t", help="the run with a finished chat stage")
    parser.add_argument("--home", default=os.environ.get("NANOCHAT_HOME", "~/.cache/nanochat"))
    parser.add_argument("--no-preset", action="store_true", help="do not add --preset tiny")
    parser.add_argument("-o", "--option", action="append", default=[], help="extra overrides")
    args = parser.parse_args()
    source = Path(args.home).expanduser() / "runs" / args.run
    if not (source / "sft" / "done.json").is_file():
        print(f"{source} has no finished sft stage; run the tiny pipeline first", file=sys.stderr)
        return 2
    home = Path(tempfile.mkdtemp(prefix="nanochat-dpo-tiny-"))
    run_dir = home / "runs" / args.run
    shutil.copytree(source, run_dir)
    shutil.rmtree(run_dir / "dpo", ignore_errors=True)
    command = ["run", "dpo", "--run", args.run]
    command += [] if args.no_preset else ["--preset", "tiny"]
    command += [x for o in args.option for x in ("-o", o)]
    env = {**os.environ, "NANOCHAT_HOME": str(home)}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "nanochat", *command], env=env, check=True, stdout=subprocess.DEVNULL
    )
    seconds = time.perf_counter() - started
    result = json.loads((run_dir / "dpo" / "done.json").read_text())["result"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    pairs = [r for r in records if r.get("stage") == "dpo" and r.get("event") == "pairs"][-1]
    before, after = result["base_pass@1"], result["pass@1"]
    se_before, se_after = result["base_pass@1_stderr"], result["pass@1_stderr"]
    n = result["eval_problems"]
    gain_se = math.sqrt(se_before**2 + se_after**2)
    per_prompt = pairs["samples"] // max(1, pairs["prompts"])
    print(f"nanochat {' '.join(command)}  (in {home})")
    print(
        f"pairs: {pairs['pairs']} from {pairs['prompts_with_both']} of {pairs['prompts']} prompts "
        f"x {per_prompt} samples (sample accuracy {100 * pairs['sample_accuracy']:.1f}%), "
        f"sampled in {pairs['seconds']:.0f} s"
    )
    print(f"held-out pass@1 ({n:.0f} problems, greedy):")
    print(f"  before: {100 * before:.1f}% +- {100 * se_before:.1f}")
    print(f"  after:  {100 * after:.1f}% +- {100 * se_after:.1f}")
    print(f"  change: {100 * (after - before):+.1f} points (+- {100 * gain_se:.1f})")
    print(f"dpo: {result['steps']} steps, {seconds:.0f} s in all (limit {LIMIT_S:.0f} s)")
    checks = {"pass@1 rises": after > before, "under 10 minutes": seconds < LIMIT_S}
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
