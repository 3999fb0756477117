"""Adversarial tokenizer-training benchmark: long repetitive texts, ours against PyPI rustbpe.

Run from the repository root::

    uv run python -m benchmarks.tokenizer_adversarial
    uv run python -m benchmarks.tokenizer_adversarial --n 250000 1000000 --timeout 60

Each input (``"ab" * N``, ``"x" * N`` and N random lowercase letters: one huge pre-tokenized
chunk each) is trained to ``--vocab`` ids by nanochat_rustbpe and by PyPI ``rustbpe`` 0.1.0,
each in a fresh subprocess with a wall-clock limit, so that a quadratic (or hanging)
implementation cannot hang the benchmark: a run over the limit is killed and reported as such.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CHILD = """
import json, sys, time
impl, unit, n, vocab = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if unit == "random":
    import random
    text = "".join(random.Random(0).choices("abcdefghijklmnopqrstuvwxyz", k=n))
else:
    text = unit * n
started = time.perf_counter()
if impl == "nanochat_rustbpe":
    from nanochat_rustbpe import Tokenizer
    merges = len(Tokenizer.train([text], vocab).merges())
else:
    import rustbpe
    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(iter([text]), vocab)
    merges = len(tok.get_mergeable_ranks()) - 256
print(json.dumps({"seconds": time.perf_counter() - started, "merges": merges}))
"""

IMPLEMENTATIONS = ["nanochat_rustbpe", "rustbpe (PyPI 0.1.0)"]


def run_one(impl: str, unit: str, n: int, vocab: int, timeout: float) -> str:
    """Train once in a subprocess; the time as text, or why there is none."""
    key = "nanochat_rustbpe" if impl == "nanochat_rustbpe" else "pypi"
    cmd = [sys.executable, "-c", CHILD, key, unit, str(n), str(vocab)]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"> {timeout:.0f} s (killed)"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"failed (exit {proc.returncode}: {last[:60]})"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    wall = time.perf_counter() - started
    return f"{result['seconds']:.2f} s ({result['merges']} merges, {wall:.1f} s with start-up)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1_000_000], help="repetitions")
    parser.add_argument("--vocab", type=int, default=1000, help="vocab_size to train to")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per run at most")
    args = parser.parse_args()
    print(f"training to vocab_size={args.vocab}, each run limited to {args.timeout:.0f} s")
    for n in args.n:
        for unit in ["ab", "x", "random"]:
            for impl in IMPLEMENTATIONS:
                result = run_one(impl, unit, n, args.vocab, args.timeout)
                label = f"{n:,} random letters" if unit == "random" else f"{unit!r} * {n:,}"
                print(f"{label:<24} {impl:<22} {result}", flush=True)


if __name__ == "__main__":
    main()
