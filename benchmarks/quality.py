"""Learning per token and per second: train configurations side by side on one token stream.

Run from the repository root::

    uv run python -m benchmarks.quality                        # today's gpt vs the new default
    uv run python -m benchmarks.quality --vocab 32768 --steps 300 \\
        --config today=gpt:value_embeds=0,layer_scalars=false,window_pattern=L \\
        --config default=gpt --config llama=llama:n_embd=256

Each ``--config LABEL=MODEL[:key=value,...]`` names a registered model plugin and overrides of
its options (as ``-o model.key=value`` would give them; ``;`` also separates overrides, for
values holding commas). Every configuration trains from the same seed on the identical token
stream (a fixed slice of the train split of ``--dataset``, tokenized with a BPE tokenizer
trained on that split to ``--vocab`` ids and cached), with its plugin's own optimizers at the
pretrain stage's default learning rates and schedule, for ``--steps`` steps of
``--batch x --seq`` tokens: equal tokens by construction.

The configurations train *interleaved*: one step of A, one of B, ..., then the next step. On a
shared machine a slow spell then hits all of them alike, and each configuration's steps are
timed on their own; tokens/s is ``batch x seq / median step time``. Validation bits per byte
(:func:`nanochat.core.evaluation.evaluate_bpb`, the metric of the ``bpb`` eval and the pretrain
stage) is measured on the same held-out tokens every ``--eval-every`` steps and at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from nanochat_stages.options import TrainingOptions
from nanochat_stages.schedule import lr_multiplier

from benchmarks.corpus import cache_dir
from nanochat.core.config import apply_overrides
from nanochat.core.evaluation import evaluate_bpb, text_eval_batches
from nanochat.core.models import OptimizerSettings
from nanochat.core.registry import Registry
from nanochat.core.special_tokens import BOS, SPECIAL_TOKENS

#: Today's ``gpt`` (issue 19's options off), the default baseline of a run without --config.
TODAY = "today=gpt:value_embeds=0,layer_scalars=false,skip_connections=false,window_pattern=L"


@dataclass
class Trainee:
    """One configuration under training: its model, optimizers and measurements."""

    label: str
    spec: str
    model: Any
    optimizers: list[Any]
    step_times: list[float] = field(default_factory=list)
    bpb: dict[int, float] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)


def parse_config(text: str) -> tuple[str, str, dict[str, str]]:
    """``LABEL=MODEL[:k=v,...]`` -> ``(label, model, overrides)``."""
    label, sep, rest = text.partition("=")
    if not sep or not label or not rest:
        raise SystemExit(f"--config {text!r}: expected LABEL=MODEL[:key=value,...]")
    model, _, tail = rest.partition(":")
    overrides: dict[str, str] = {}
    for item in tail.replace(";", ",").split(","):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--config {text!r}: override {item!r} is not key=value")
        overrides[key.strip()] = value.strip()
    return label, model, overrides


def load_tokenizer(registry: Registry, dataset: Any, name: str, vocab: int, chars: int) -> Any:
    """A BPE tokenizer of ``vocab`` ids trained on the train split (cached on disk)."""
    factory = registry.create("tokenizer", "rustbpe")
    where = cache_dir() / f"quality_tokenizer_{name}_{vocab}_{chars}"
    if where.is_dir():
        try:
            return factory.load(where)
        except Exception:  # a stale or partial cache: train again
            pass

    def texts() -> Any:
        seen = 0
        for text, _ in dataset.iter("train", shuffle=False):
            yield text
            seen += len(text)
            if seen >= chars:
                return

    tokenizer = factory.train(texts(), vocab, list(SPECIAL_TOKENS))
    where.mkdir(parents=True, exist_ok=True)
    tokenizer.save(where)
    return tokenizer


def token_stream(dataset: Any, tokenizer: Any, rows: int, seq: int) -> torch.Tensor:
    """``rows`` rows of ``seq + 1`` ids: train documents in stored order, each after ``<|bos|>``."""
    bos = tokenizer.special_tokens[BOS]
    need = rows * (seq + 1)
    stream: list[int] = []
    texts: list[str] = []
    for text, _ in dataset.iter("train", shuffle=False):
        texts.append(text)
        if len(texts) == 64:
            for ids in tokenizer.encode_batch(texts):
                stream += [bos, *ids]
            texts = []
            if len(stream) >= need:
                break
    for ids in tokenizer.encode_batch(texts):
        stream += [bos, *ids]
    if len(stream) < need:
        raise SystemExit(f"the train split holds {len(stream)} tokens, {need} are needed")
    return torch.tensor(stream[:need], dtype=torch.long).view(rows, seq + 1)


def build(registry: Registry, spec: str, args: argparse.Namespace) -> Trainee:
    """Create the model of one ``--config`` with its optimizers (``depth`` and
    ``sequence_len`` from the flags unless the config sets them)."""
    label, name, overrides = parse_config(spec)
    resolved = registry.resolve("model", name)
    options = resolved.spec.options() if resolved.spec.options else None
    if options is not None:
        shape = {"sequence_len": args.seq, "depth": args.depth}
        for key, value in shape.items():
            if key in vars(options):
                overrides.setdefault(key, str(value))
        options = apply_overrides(options, overrides, f"{label}.{name}")
    factory = registry.create("model", name, options)
    torch.manual_seed(args.seed)
    model = factory.build(factory.config(args.vocab))
    defaults = TrainingOptions()
    settings = OptimizerSettings(
        matrix_lr=defaults.matrix_lr,
        embedding_lr=defaults.embedding_lr,
        unembedding_lr=defaults.unembedding_lr,
        scalar_lr=defaults.scalar_lr,
        weight_decay=defaults.weight_decay,
    )
    return Trainee(label, spec, model.train(), factory.optimizers(model, settings))


def train_step(t: Trainee, batch: torch.Tensor, lr_mult: float) -> None:
    """One timed optimisation step of ``t`` on ``batch`` (``rows, seq + 1``)."""
    for opt in t.optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * lr_mult
    t0 = time.perf_counter()
    loss = t.model(batch[:, :-1], batch[:, 1:])
    loss.backward()
    for opt in t.optimizers:
        opt.step()
    t.model.zero_grad(set_to_none=True)
    t.step_times.append(time.perf_counter() - t0)
    t.losses.append(float(loss.detach()))


def main(argv: list[str] | None = None) -> None:
    """Parse flags, prepare data, train every configuration interleaved and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", action="append", help="LABEL=MODEL[:key=value,...] (repeatable)")
    p.add_argument("--dataset", default="demo-text", help="a registered text dataset")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--depth", type=int, default=4, help="sets depth= on models that have it")
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-tokens", type=int, default=65536)
    p.add_argument("--tokenizer-chars", type=int, default=20_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    specs = args.config or [TODAY, "default=gpt"]
    registry = Registry.load()
    dataset = registry.create("dataset", args.dataset)
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(registry, dataset, args.dataset, args.vocab, args.tokenizer_chars)
    data = token_stream(dataset, tokenizer, args.steps * args.batch, args.seq)
    val = text_eval_batches(dataset, tokenizer, args.seq, 16, args.eval_tokens, "cpu", "val")
    token_bytes = torch.tensor(tokenizer.token_bytes(), dtype=torch.long)
    print(
        f"data: {args.dataset}, vocab {tokenizer.vocab_size}, {args.steps} steps x "
        f"{args.batch}x{args.seq} = {data[:, 1:].numel():,} train tokens, "
        f"{sum(t.numel() for _, t in val):,} val tokens ({time.perf_counter() - t0:.0f}s)"
    )
    trainees = [build(registry, s, args) for s in specs]
    for t in trainees:
        n = sum(p.numel() for p in t.model.parameters())
        print(f"  {t.label}: {t.spec}  ({n / 1e6:.2f}M params)")
    defaults = TrainingOptions()
    checkpoints = sorted({*range(args.eval_every, args.steps, args.eval_every), args.steps})
    began = time.perf_counter()
    for step in range(args.steps):
        mult = lr_multiplier(
            step, args.steps, defaults.warmup_ratio, defaults.warmdown_ratio,
            defaults.final_lr_frac,
        )  # fmt: skip
        batch = data[step * args.batch : (step + 1) * args.batch]
        for t in trainees:
            train_step(t, batch, mult)
        if step + 1 in checkpoints:
            for t in trainees:
                t.model.eval()
                t.bpb[step + 1] = evaluate_bpb(t.model, val, token_bytes, desc=f"bpb {t.label}")
                t.model.train()
            line = "  ".join(f"{t.label} {t.bpb[step + 1]:.4f}" for t in trainees)
            speed = "  ".join(
                f"{t.label} {args.batch * args.seq / statistics.median(t.step_times):.0f}"
                for t in trainees
            )
            print(
                f"step {step + 1:>5}  val bpb: {line}  tokens/s so far: {speed}  "
                f"({time.perf_counter() - began:.0f}s)"
            )
            if args.json:  # what is known so far, in case the run is cut short
                write_json(trainees, args, [c for c in checkpoints if c <= step + 1])
    report(trainees, args, checkpoints)


def report(trainees: list[Trainee], args: argparse.Namespace, checkpoints: list[int]) -> None:
    """Print bits/byte at each checkpoint and tokens/s per configuration, relative to the first."""
    tokens = args.batch * args.seq
    base = trainees[0]
    print(f"\n{'config':<12}" + "".join(f"{'bpb@' + str(c):>11}" for c in checkpoints), end="")
    print(f"{'tokens/s':>10}{'median ms':>11}{'vs ' + base.label + ' bpb':>16}{'tok/s':>8}")
    for t in trainees:
        median = statistics.median(t.step_times)
        tps = tokens / median
        final = t.bpb[checkpoints[-1]]
        d_bpb = final / base.bpb[checkpoints[-1]] - 1
        d_tps = tps / (tokens / statistics.median(base.step_times)) - 1
        print(
            f"{t.label:<12}" + "".join(f"{t.bpb[c]:>11.4f}" for c in checkpoints)
            + f"{tps:>10.0f}{median * 1e3:>11.1f}{d_bpb:>+16.2%}{d_tps:>+8.1%}"
        )  # fmt: skip
    if args.json:
        write_json(trainees, args, checkpoints)


def write_json(trainees: list[Trainee], args: argparse.Namespace, checkpoints: list[int]) -> None:
    """Write the flags and each configuration's results at ``checkpoints`` to ``args.json``."""
    tokens = args.batch * args.seq
    rows = [
        {
            "label": t.label,
            "config": t.spec,
            "bpb": {c: t.bpb[c] for c in checkpoints},
            "tokens_per_s": tokens / statistics.median(t.step_times),
            "median_step_ms": statistics.median(t.step_times) * 1e3,
            "steps_done": len(t.step_times),
            "final_train_loss": t.losses[-1],
        }
        for t in trainees
    ]
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.json.write_text(json.dumps({"args": settings, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
