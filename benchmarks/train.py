"""Training-step benchmark of the ``gpt`` model: tokens/s and MFU, eager and torch.compile.

Run from the repository root::

    uv run python -m benchmarks.train                      # tiny shape (d4, T=256, V=4096), CPU
    uv run python -m benchmarks.train --depth 12 --batch 32  # d12 on a GPU (bf16 autocast)

One timed step is forward + backward + optimizer step on random tokens (a plain PyTorch loop:
no data loader, no gradient accumulation). Variants:

- ``muon+adamw``: the plugin's optimizers (Muon for hidden matrices, AdamW for the rest);
- ``adamw only``: the baseline — the same model with a single ``torch.optim.AdamW``;

each with torch.compile off and on. MFU = ``flops_per_token * tokens/s / peak``, with the
model's own :meth:`~nanochat.plugins.gpt.model.GPT.flops_per_token` (the count used in
training logs). The peak is, on CPU, the fp32 matmul throughput measured in the same run by
:func:`~nanochat.plugins.gpt.flops.measure_cpu_matmul_flops`, and on CUDA the dense bf16 peak of
the card from :data:`~nanochat.plugins.gpt.flops.PEAK_BF16_FLOPS`.

Results (fill in when measured; the machine and command matter):

=========================  ======  =========  =====  ==========================================
machine                    shape   variant    tok/s  MFU
=========================  ======  =========  =====  ==========================================
see the report of the run  ...     ...        ...    ...
=========================  ======  =========  =====  ==========================================
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable

import torch

from nanochat.plugins.gpt.factory import GPTFactory
from nanochat.plugins.gpt.flops import measure_cpu_matmul_flops, peak_flops
from nanochat.plugins.gpt.model import GPT
from nanochat.plugins.gpt.options import GPTOptions


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(args: argparse.Namespace, device: torch.device) -> GPT:
    """A freshly initialised model of the benchmark's shape on ``device``."""
    factory = GPTFactory(GPTOptions(depth=args.depth, sequence_len=args.seq))
    torch.manual_seed(0)
    return factory.build(factory.config(args.vocab)).to(device)


def make_step(
    args: argparse.Namespace, device: torch.device, optimizer: str, compiled: bool
) -> tuple[Callable[[torch.Tensor], float], GPT]:
    """One training step function (forward, backward, optimizer) and its model."""
    model = build(args, device)
    if optimizer == "muon+adamw":
        opts = GPTFactory().optimizers(model, world_size=1)
    else:
        fused = device.type == "cuda"
        opts = [torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), fused=fused)]
    forward = torch.compile(model, dynamic=False) if compiled else model
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )

    def step(batch: torch.Tensor) -> float:
        with autocast:
            loss = forward(batch[:, :-1], batch[:, 1:])
        loss.backward()
        for opt in opts:
            opt.step()
        model.zero_grad(set_to_none=True)
        return loss.detach()

    return step, model


def time_variant(
    args: argparse.Namespace, device: torch.device, optimizer: str, compiled: bool
) -> dict[str, float | str]:
    """Warm up, then time ``args.steps`` steps; return tokens/s and MFU inputs."""
    step, model = make_step(args, device, optimizer, compiled)
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=g).to(device)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step(batch)
    _sync(device)
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step(batch)
        _sync(device)
        times.append(time.perf_counter() - t0)
    tokens = args.batch * args.seq
    best, median = min(times), statistics.median(times)
    return {
        "variant": f"{optimizer}, {'compile' if compiled else 'eager'}",
        "step_ms": best * 1e3,
        "median_step_ms": median * 1e3,
        "tokens_per_s": tokens / best,
        "median_tokens_per_s": tokens / median,
        "model_flops_per_s": model.flops_per_token() * tokens / best,
        "warmup_s": warm_s,
        "params": model.num_params(),
    }


def main(argv: list[str] | None = None) -> None:
    """Parse flags, measure the peak, time every variant and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--batch", type=int, default=None, help="rows per step (CPU 8, CUDA 32)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--compile", choices=("off", "on", "both"), default="both")
    p.add_argument("--optimizers", default="muon+adamw,adamw only")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--peak-size", type=int, default=1024, help="matrix side of the CPU peak")
    p.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.batch is None:
        args.batch = 32 if device.type == "cuda" else 8
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        name = torch.cuda.get_device_name()
        peak = peak_flops(name)
        if peak is None:
            raise SystemExit(f"no peak FLOP/s known for {name!r}; add it to PEAK_BF16_FLOPS")
        peak_note = f"{name}: bf16 dense peak {peak / 1e12:.0f} TFLOP/s (table)"
    else:
        peak = measure_cpu_matmul_flops(args.peak_size, torch.float32, seconds=2.0)
        peak_note = (
            f"CPU, {torch.get_num_threads()} threads: measured fp32 matmul peak "
            f"{peak / 1e9:.1f} GFLOP/s ({args.peak_size}x{args.peak_size})"
        )
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    rows = []
    for optimizer in [o.strip() for o in args.optimizers.split(",")]:
        for compiled in compiles:
            try:
                row = time_variant(args, device, optimizer, compiled)
            except Exception as exc:  # report the variant as failed, keep the others
                print(f"{optimizer}, compile={compiled}: FAILED {type(exc).__name__}: {exc}")
                continue
            if device.type == "cpu":  # the peak again next to each variant (neighbours vary)
                row["peak_flops"] = max(peak, measure_cpu_matmul_flops(args.peak_size, seconds=1.0))
            else:
                row["peak_flops"] = peak
            row["mfu"] = row["model_flops_per_s"] / row["peak_flops"]
            rows.append(row)
    if not rows:
        raise SystemExit("every variant failed")
    if device.type == "cpu":
        best_peak = max(r["peak_flops"] for r in rows)
        peak_note += f"; best over the run {best_peak / 1e9:.1f} GFLOP/s"
        for r in rows:  # one denominator for every row: the best peak seen in this run
            r["peak_flops"] = best_peak
            r["mfu"] = r["model_flops_per_s"] / best_peak
    print(
        f"shape: depth {args.depth}, seq {args.seq}, vocab {args.vocab}, batch {args.batch}, "
        f"{rows[0]['params'] / 1e6:.2f}M params"
    )
    print(peak_note)
    print(
        f"{'variant':<26}{'best ms':>10}{'median ms':>11}{'tokens/s':>12}"
        f"{'model GFLOP/s':>15}{'MFU':>8}"
    )
    for r in rows:
        print(
            f"{r['variant']:<26}{r['step_ms']:>10.1f}{r['median_step_ms']:>11.1f}"
            f"{r['tokens_per_s']:>12.0f}{r['model_flops_per_s'] / 1e9:>15.1f}{r['mfu']:>8.1%}"
        )
    if args.json:
        print(json.dumps({"peak_flops": peak, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
