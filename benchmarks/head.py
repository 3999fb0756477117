"""Training step of the ``gpt`` model with the fused chunked head vs the plain head.

Run from the repository root::

    uv run python -m benchmarks.head                     # d4, width 256, batch 8 x 256, V 32,768
    uv run python -m benchmarks.head --vocab 4096 --steps 10

Two copies of one model (same weights, same optimizers: Muon + AdamW) take training steps on
the same batch, *interleaved* (plain, fused, plain, fused, ...), so a slow spell of a shared
machine hits both alike. "plain" computes the whole fp32 ``(tokens, vocab)`` logits, soft-caps
them and calls ``cross_entropy`` (the path before issue 19); "fused" is :mod:`the chunked head
<nanochat.plugins.gpt.head>`. Each step is forward + backward + optimizer step; the table gives
the median and best step time of each, the speedup (plain / fused, medians), and the largest
difference between the two losses over the run (the two copies must stay the same model).
``--options`` passes gpt options (``key=value,...``; default: today's architecture).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from nanochat.core.config import apply_overrides
from nanochat.core.models import OptimizerSettings
from nanochat.plugins.gpt.factory import GPTFactory
from nanochat.plugins.gpt.model import GPT
from nanochat.plugins.gpt.options import GPTOptions

TODAY = "value_embeds=0,layer_scalars=false,skip_connections=false,window_pattern=L"


def make(options: GPTOptions, vocab: int, fused: bool) -> tuple[GPT, list[torch.optim.Optimizer]]:
    """A seeded model with the chosen head and its optimizers."""
    factory = GPTFactory(options)
    torch.manual_seed(0)
    model = factory.build(factory.config(vocab))
    model.fused_head = fused
    return model, factory.optimizers(model, OptimizerSettings())


def step(model: GPT, opts: list[torch.optim.Optimizer], batch: torch.Tensor) -> tuple[float, float]:
    """One training step; ``(seconds, loss)``."""
    t0 = time.perf_counter()
    loss = model(batch[:, :-1], batch[:, 1:])
    loss.backward()
    for opt in opts:
        opt.step()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0, float(loss.detach())


def main(argv: list[str] | None = None) -> None:
    """Parse flags, time both heads interleaved, print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--options", default=TODAY, help="gpt options, key=value,...")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = dict(kv.split("=", 1) for kv in args.options.split(",") if kv)
    pairs |= {"depth": str(args.depth), "sequence_len": str(args.seq)}
    options = apply_overrides(GPTOptions(), pairs, "model")
    g = torch.Generator().manual_seed(0)
    variants = {name: make(options, args.vocab, name == "fused") for name in ("plain", "fused")}
    times: dict[str, list[float]] = {name: [] for name in variants}
    losses: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(args.warmup + args.steps):
        batch = torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=g)
        for name, (model, opts) in variants.items():
            seconds, loss = step(model, opts, batch)
            losses[name].append(loss)
            if i >= args.warmup:
                times[name].append(seconds)
    tokens = args.batch * args.seq
    params = sum(p.numel() for p in variants["plain"][0].parameters())
    print(
        f"depth {args.depth}, seq {args.seq}, vocab {args.vocab}, batch {args.batch} "
        f"({tokens} tokens/step), {params / 1e6:.2f}M params, {torch.get_num_threads()} threads, "
        f"{args.steps} timed steps each, interleaved"
    )
    print(f"{'head':<8}{'median ms':>11}{'best ms':>10}{'tokens/s':>10}")
    for name in variants:
        median = statistics.median(times[name])
        print(
            f"{name:<8}{median * 1e3:>11.1f}{min(times[name]) * 1e3:>10.1f}{tokens / median:>10.0f}"
        )
    speedup = statistics.median(times["plain"]) / statistics.median(times["fused"])
    drift = max(abs(a - b) for a, b in zip(losses["plain"], losses["fused"], strict=True))
    print(
        f"speedup (plain / fused, median step): {speedup:.2f}x; largest loss difference {drift:.2e}"
    )


if __name__ == "__main__":
    main()
