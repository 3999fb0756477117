"""Generation speed: the engine (KV cache, batched slots) against the naive loop a user would
otherwise write (recompute the whole prefix each step, no cache), in the same run.

For each model shape it prints, for 256 new tokens after a 64-token prompt:

- naive decode tokens/s at batch 1;
- engine decode tokens/s at batch 1 and batch 8 (aggregate over the 8 rows);
- engine prefill tokens/s (the 64-token prompt);

and the ratios the targets are about (engine batch 1 / naive >= 8x, engine batch 8 / engine
batch 1 >= 4x on a 2-core CPU). Models are randomly initialised (speed does not depend on the
weights); every generation runs to its token budget (no stop tokens).

    uv run python -m benchmarks.inference                 # tiny (d3, w192), d4 (w256); fp32, bf16
    uv run python -m benchmarks.inference --device cuda --shapes d12 --vocab 65536
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import time
from typing import Any

import torch

from nanochat.core.engine import Engine, Request, SamplingParams
from nanochat.plugins.gpt.factory import GPTFactory
from nanochat.plugins.gpt.model import ROTARY_LEN_FACTOR
from nanochat.plugins.gpt.options import GPTOptions

SHAPES: dict[str, GPTOptions] = {
    "tiny": GPTOptions(depth=3, head_dim=64, sequence_len=256),  # the `tiny` preset's model
    "d4": GPTOptions(depth=4, aspect_ratio=64, head_dim=128, sequence_len=512),  # width 256
    "d12": GPTOptions(depth=12, head_dim=128, sequence_len=2048),
}

DTYPE_LABELS = {"float32": "fp32", "bfloat16": "bf16"}


class IdsTokenizer:
    """Just enough of a tokenizer for the engine (ids shown as numbers; no special tokens)."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.special_tokens: dict[str, int] = {}

    def decode(self, ids: list[int]) -> str:
        """Ids as text."""
        return " ".join(map(str, ids))

    def encode(self, text: str) -> list[int]:
        """Not used (no tools)."""
        return []


MAX_BATCH = 64  # the engine preallocates each slot's cache for the model's whole context


def bounded(low: int, high: int) -> Any:
    """An argparse type: an integer from ``low`` to ``high``, else a one-line usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low:,} to {high:,}, not {value:,}")
        return value

    return parse


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """The prompt, generation, batch and repeat options both generation benchmarks take."""
    parser.add_argument("--prompt", type=bounded(1, 1 << 20), default=64, help="prompt tokens")
    parser.add_argument("--new", type=bounded(2, 1 << 20), default=256, help="new tokens per row")
    parser.add_argument(
        "--batch", type=bounded(2, MAX_BATCH), default=8, help="rows of the batched runs"
    )
    parser.add_argument(
        "--repeat",
        type=bounded(1, 100),
        default=3,
        help="runs per figure; the best is shown (noisy VMs)",
    )


def check_context(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error when a prompt and its new tokens exceed a shape's context."""
    for name in args.shapes:
        context = SHAPES[name].sequence_len * ROTARY_LEN_FACTOR
        if args.prompt + args.new > context:
            parser.error(
                f"--prompt {args.prompt} + --new {args.new} exceeds the {context:,}-token "
                f"context of {name}"
            )


def naive_decode(model: Any, prompt: torch.Tensor, new_tokens: int, autocast: Any) -> float:
    """Greedy decoding recomputing the whole prefix each step; tokens/s."""
    ids = prompt.clone()
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(new_tokens):
            with autocast():
                logits = model(ids)[:, -1]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    sync(prompt.device)
    return new_tokens * prompt.size(0) / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (honest timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loaded_engine(
    model: Any, vocab: int, batch: int, prompt_len: int, new_tokens: int, autocast: Any
) -> Engine:
    """An engine of ``batch`` slots with ``batch`` random prompts submitted (seeded by the
    batch size), each to run to ``new_tokens`` with no stop tokens."""
    engine = Engine(model, IdsTokenizer(vocab), slots=batch, autocast=autocast)
    generator = torch.Generator().manual_seed(batch)
    params = SamplingParams(max_tokens=new_tokens, stop_tokens=())
    for prompt in torch.randint(0, vocab, (batch, prompt_len), generator=generator).tolist():
        engine.submit(Request(prompt, params))
    return engine


def engine_run(
    model: Any, vocab: int, batch: int, prompt_len: int, new_tokens: int, autocast: Any
) -> tuple[float, float]:
    """``(prefill tokens/s, decode tokens/s)`` of the engine with ``batch`` requests at once."""
    engine = loaded_engine(model, vocab, batch, prompt_len, new_tokens, autocast)
    device = next(model.parameters()).device
    start = time.perf_counter()
    events = engine.step()  # admits (prefills) every request and samples its first token
    sync(device)
    prefill = batch * prompt_len / (time.perf_counter() - start)
    start = time.perf_counter()
    while engine.busy:
        events += engine.step()
    sync(device)
    decoded = len(events) - batch
    return prefill, decoded / (time.perf_counter() - start)


def step_times(
    model: Any, vocab: int, batch: int, prompt_len: int, new_tokens: int, autocast: Any
) -> list[float]:
    """Seconds of each decode step of the engine with ``batch`` requests at once."""
    engine = loaded_engine(model, vocab, batch, prompt_len, new_tokens, autocast)
    device = next(model.parameters()).device
    engine.step()  # prefill, and the first decode step
    times = []
    while engine.busy:
        start = time.perf_counter()
        engine.step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def print_by_position(
    model: Any, label: str, args: argparse.Namespace, autocast: Any, parts: int
) -> None:
    """Median step time of batch 1 and batch ``args.batch`` over ``parts`` spans of the
    generation (best of ``args.repeat`` runs): how a step's cost grows with the KV cache."""
    best = {b: [float("inf")] * parts for b in (1, args.batch)}
    for _ in range(args.repeat):
        for b in best:
            times = step_times(model, args.vocab, b, args.prompt, args.new, autocast)
            span = len(times) // parts
            for i in range(parts):
                chunk = sorted(times[i * span : (i + 1) * span])
                best[b][i] = min(best[b][i], chunk[len(chunk) // 2])
    width = args.new // parts
    for i in range(parts):
        one, many = best[1][i] * 1e6, best[args.batch][i] * 1e6
        low = args.prompt + i * width
        print(
            f"  {label} positions {low}-{low + width}: step b1 {one:,.0f} us, "
            f"b{args.batch} {many:,.0f} us, b{args.batch}/b1 {args.batch * one / many:.2f}x"
        )


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["tiny", "d4"], choices=sorted(SHAPES))
    parser.add_argument("--vocab", type=bounded(2, 1 << 20), default=4096)
    add_generation_arguments(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtypes",
        nargs="+",
        default=["float32", "bfloat16"],
        choices=["float32", "bfloat16"],
        help="weight dtypes to measure on the CPU (both loops run in it; CUDA uses bf16 autocast)",
    )
    parser.add_argument(
        "--by-position",
        type=int,
        default=0,
        metavar="PARTS",
        help="also print the median step time of b1 and the batch over PARTS spans of the "
        "generation (a batch-8 step slows down as the KV cache grows)",
    )
    args = parser.parse_args()
    check_context(parser, args)
    # timed steps: the first step admits (prefills, samples one token) and decodes one more
    steps = max(0, args.new - 2)
    if not 0 <= args.by_position <= steps:
        parser.error(f"--by-position must be between 0 and {steps} (the decode steps of --new)")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device: not a device: {args.device!r} (cpu, cuda, cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device: cpu or cuda, not {args.device!r}")
    autocast: Any = contextlib.nullcontext
    if device.type == "cuda":

        def autocast() -> Any:
            return torch.autocast("cuda", dtype=torch.bfloat16)

    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads")
    print(f"{args.prompt}-token prompt, {args.new} new tokens, vocab {args.vocab}")
    header = (
        f"{'model':10s}{'params':>9s}{'naive b1':>11s}{'engine b1':>11s}"
        f"{'engine b' + str(args.batch):>11s}{'prefill':>11s}{'b1/naive':>10s}"
        f"{'b' + str(args.batch) + '/b1':>8s}"
    )
    print(header + "   (tokens/s)")
    dtypes = args.dtypes if device.type == "cpu" else ["float32"]
    for name, dtype in itertools.product(args.shapes, dtypes):
        torch.manual_seed(0)
        factory = GPTFactory(SHAPES[name])
        model = factory.build(factory.config(args.vocab)).to(device, getattr(torch, dtype)).eval()
        params = sum(p.numel() for p in model.parameters())
        label = f"{name} {DTYPE_LABELS[dtype]}" if device.type == "cpu" else name
        prompt = torch.randint(0, args.vocab, (1, args.prompt), device=device)
        engine_run(model, args.vocab, 1, args.prompt, 8, autocast)  # warm-up
        naive = one = many = prefill = 0.0
        for _ in range(args.repeat):  # interleaved, so a slow spell of the VM hits all three
            naive = max(naive, naive_decode(model, prompt, args.new, autocast))
            one = max(one, engine_run(model, args.vocab, 1, args.prompt, args.new, autocast)[1])
            p, m = engine_run(model, args.vocab, args.batch, args.prompt, args.new, autocast)
            prefill, many = max(prefill, p), max(many, m)
        print(
            f"{label:10s}{params / 1e6:>8.1f}M{naive:>11.0f}{one:>11.0f}{many:>11.0f}"
            f"{prefill:>11.0f}{one / naive:>9.1f}x{many / one:>7.1f}x"
        )
        if args.by_position:
            print_by_position(model, label, args, autocast, args.by_position)


if __name__ == "__main__":
    main()
