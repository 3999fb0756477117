"""Time `dpo --preset tiny` with on-policy pairs and report held-out pass@1 before and after.

Needs a run whose chat stages are done (``nanochat run tokenizer pretrain midtrain sft --preset
tiny --run t``; the script runs that first when the run has no finished `sft`). Then it runs
``nanochat run dpo --preset tiny --run RUN`` (after deleting an earlier `dpo` of the run) and
prints the pairs it built, greedy pass@1 on the held-out ``arithmetic`` problems of the
starting model and of the trained one (each with its standard error and the number of
problems), and the wall time. Exits non-zero when pass@1 does not rise or the stage takes 10
minutes or more::

    NANOCHAT_HOME=... uv run python benchmarks/dpo_tiny.py --run t [-o dpo.prompts=...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

LIMIT_S = 600.0


def nanochat(args: list[str]) -> float:
    """Run ``nanochat ARGS``; return its wall time."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nanochat", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    """Run the stage and report; the exit status says whether the checks held."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="t", help="the run (default t)")
    parser.add_argument("-o", "--option", action="append", default=[], help="extra overrides")
    args = parser.parse_args()
    extra = [x for o in args.option for x in ("-o", o)]
    home = Path(os.environ.get("NANOCHAT_HOME", Path.home() / ".cache" / "nanochat"))
    run_dir = home / "runs" / args.run
    if not (run_dir / "sft" / "done.json").is_file():
        stages = ["tokenizer", "pretrain", "midtrain", "sft"]
        built = nanochat(["run", *stages, "--preset", "tiny", "--run", args.run])
        print(f"built the tiny chat run in {built:.0f} s")
    shutil.rmtree(run_dir / "dpo", ignore_errors=True)
    seconds = nanochat(["run", "dpo", "--preset", "tiny", "--run", args.run, *extra])
    result = json.loads((run_dir / "dpo" / "done.json").read_text())["result"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    pairs = [r for r in records if r.get("stage") == "dpo" and r.get("event") == "pairs"][-1]
    before, after = result["base_pass@1"], result["pass@1"]
    se_before, se_after = result["base_pass@1_stderr"], result["pass@1_stderr"]
    n = result["eval_problems"]
    gain_se = math.sqrt(se_before**2 + se_after**2)
    per_prompt = pairs["samples"] // max(1, pairs["prompts"])
    print(
        f"pairs: {pairs['pairs']} from {pairs['prompts']} prompts x {per_prompt} samples "
        f"(sample accuracy {100 * pairs['sample_accuracy']:.1f}%), sampled in "
        f"{pairs['seconds']:.0f} s"
    )
    print(f"held-out pass@1 ({n:.0f} problems, greedy):")
    print(f"  before (sft): {100 * before:.1f}% +- {100 * se_before:.1f}")
    print(f"  after (dpo):  {100 * after:.1f}% +- {100 * se_after:.1f}")
    print(f"  change: {100 * (after - before):+.1f} points (+- {100 * gain_se:.1f})")
    print(f"dpo: {result['steps']} steps, {seconds:.0f} s in all (limit {LIMIT_S:.0f} s)")
    checks = {"pass@1 rises": after > before, "under 10 minutes": seconds < LIMIT_S}
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
