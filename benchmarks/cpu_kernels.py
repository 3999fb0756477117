"""The Rust CPU kernels of ``nanochat-kernels`` (what the gpt and llama decode steps use on the
CPU in fp32) against what the decode step did with torch alone, in the same run:

- single-token attention over cache-shaped views (8 rows, every layer of the model, 192
  positions held) against ``F.scaled_dot_product_attention``: a tight loop, and with 150 small
  single-threaded operations between calls, as in a decode step;
- each weight product of the model at 1 and 8 rows: the panel kernel against the split layout
  (torch's batched product over column slices, the torch-only decode path) and ``F.linear``;
- the engine's decode steps (256 new tokens after a 64-token prompt, greedy, random weights),
  batch 1 and batch 8, kernels on and off alternating in one process on the same weights:
  median step time over the whole generation (best of ``--repeat`` runs) and tokens/s.

    uv run python -m benchmarks.cpu_kernels                  # tiny and d4 shapes
    uv run python -m benchmarks.cpu_kernels --shapes d4 --repeat 5
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import cast

import torch
import torch.nn.functional as F

from benchmarks.inference import SHAPES, add_generation_arguments, check_context, loaded_engine
from nanochat.plugins.gpt import cpu_attention, cpu_kernels
from nanochat.plugins.gpt.factory import GPTFactory
from nanochat.plugins.gpt.infer_linear import InferenceWeights
from nanochat.plugins.gpt.model import GPT


def best_time(fn: Callable[[], object], calls: int, repeat: int = 7) -> float:
    """Best mean seconds per call of ``fn`` over ``repeat`` loops of ``calls`` calls."""
    for _ in range(max(1, calls // 10)):
        fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def random_model(name: str) -> GPT:
    """A randomly initialised model of shape ``name`` (seed 0, vocab 4,096), for inference."""
    torch.manual_seed(0)
    factory = GPTFactory(SHAPES[name])
    return cast(GPT, factory.build(factory.config(4096))).eval()


def then(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    """``first`` followed by ``second``, as one call."""

    def both() -> None:
        first()
        second()

    return both


def attention_calls(name: str, model: GPT, rows: int, held: int) -> None:
    """Print the time of one step's attention calls (every layer) with each implementation."""
    config = model.config
    layers, heads, dim = config.n_layer, config.n_head, config.head_dim
    keys, values = torch.randn(2, layers, rows, config.n_kv_head, 4 * held, dim).unbind(0)
    q = torch.randn(rows, heads, 1, dim)
    spans = [(0, held)] * rows
    small = torch.randn(rows, config.n_embd)

    def kernel() -> None:
        for i in range(layers):
            cpu_attention.attend_one_token(q, keys[i, :, :, :held], values[i, :, :, :held], spans)

    def sdpa() -> None:
        for i in range(layers):
            F.scaled_dot_product_attention(q, keys[i, :, :, :held], values[i, :, :, :held])

    def filler() -> None:  # the small single-threaded operations of a decode step
        for _ in range(150):
            small.mul_(1.0)

    gap = best_time(filler, 200)
    ways = (("kernel", kernel), ("sdpa", sdpa))
    with torch.no_grad():
        tight = {label: best_time(fn, 300) for label, fn in ways}
        spaced = {label: best_time(then(fn, filler), 200) - gap for label, fn in ways}
    print(
        f"  {name}: {layers} layers x {rows} rows x {heads} heads x {held} keys of {dim}: "
        f"tight loop kernel {tight['kernel'] * 1e6:,.0f} us, SDPA {tight['sdpa'] * 1e6:,.0f} us; "
        f"between small ops kernel {spaced['kernel'] * 1e6:,.0f} us, "
        f"SDPA {spaced['sdpa'] * 1e6:,.0f} us"
    )


def products(name: str, model: GPT, batch: int) -> None:
    """Print each weight product of the model at 1 and ``batch`` rows, three ways."""
    block = model.block_list()[0]
    attn, mlp = block.attn, block.mlp
    groups = {
        "q/k/v": (attn.c_q.weight, attn.c_k.weight, attn.c_v.weight),
        "attn proj": (attn.c_proj.weight,),
        "MLP in": (mlp.c_fc.weight,),
        "MLP out": (mlp.c_proj.weight,),
        "head": (model.lm_head.weight,),
    }
    panel, split = InferenceWeights(), InferenceWeights()
    with torch.no_grad():
        for label, weights in groups.items():
            stacked = torch.cat([w.detach() for w in weights])
            figures = []
            for rows in (1, batch):
                x = torch.randn(rows, 1, stacked.size(1))
                cpu_kernels.ENABLED = True
                p = best_time(partial(panel.linear, x, *weights), 300)
                cpu_kernels.ENABLED = False
                s = best_time(partial(split.linear, x, *weights), 300)
                f = best_time(partial(F.linear, x, stacked), 300)
                figures.append(
                    f"{rows} row{'s' if rows > 1 else ''}: panels {p * 1e6:,.1f}, split "
                    f"{s * 1e6:,.1f}, F.linear {f * 1e6:,.1f} us ({s / p:.1f}x split)"
                )
            cpu_kernels.ENABLED = True
            shape = f"{stacked.size(0)}x{stacked.size(1)}"
            print(f"  {name} {label} ({shape}): " + "; ".join(figures))


def median_step(model: GPT, batch: int, prompt: int, new: int) -> float:
    """Median seconds of the engine's decode steps for ``batch`` requests."""
    engine = loaded_engine(model, 4096, batch, prompt, new, contextlib.nullcontext)
    engine.step()
    times = []
    while engine.busy:
        start = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def engine_steps(name: str, model: GPT, args: argparse.Namespace) -> None:
    """Print the engine's median decode step with the kernels and with torch alone."""
    best: dict[tuple[bool, int], float] = {}
    for enabled in (True, False):  # warm-up: weight layouts, caches, threads
        cpu_kernels.ENABLED = enabled
        median_step(model, args.batch, args.prompt, 4)
    for _ in range(args.repeat):  # alternating, so a slow spell of the VM hits both
        for enabled in (True, False):
            cpu_kernels.ENABLED = enabled
            for batch in (1, args.batch):
                t = median_step(model, batch, args.prompt, args.new)
                best[enabled, batch] = min(best.get((enabled, batch), float("inf")), t)
    cpu_kernels.ENABLED = True
    for batch in (1, args.batch):
        k, s = best[True, batch], best[False, batch]
        print(
            f"  {name} b{batch}: step with kernels {k * 1e6:,.0f} us ({batch / k:,.0f} "
            f"tokens/s), torch only {s * 1e6:,.0f} us ({batch / s:,.0f} tokens/s), {s / k:.2f}x"
        )
    for enabled, label in ((True, "kernels"), (False, "torch only")):
        one, many = best[enabled, 1], best[enabled, args.batch]
        print(f"  {name} b{args.batch}/b1 with {label}: {args.batch * one / many:.2f}x")


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["tiny", "d4"], choices=["tiny", "d4"])
    add_generation_arguments(parser)
    args = parser.parse_args()
    check_context(parser, args)
    if not cpu_kernels.available():
        parser.error("nanochat-kernels is not installed: nothing to compare")
    print(f"torch {torch.__version__}, cpu, {torch.get_num_threads()} threads")
    models = {name: random_model(name) for name in args.shapes}
    print("attention calls of one decode step:")
    for name, model in models.items():
        attention_calls(name, model, args.batch, 192)
    print("weight products (tight loop):")
    for name, model in models.items():
        products(name, model, args.batch)
    print(f"engine decode steps ({args.prompt}-token prompt, {args.new} new tokens, median):")
    for name, model in models.items():
        engine_steps(name, model, args)


if __name__ == "__main__":
    main()
