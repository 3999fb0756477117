"""Tokenizer benchmark: nanochat_rustbpe against PyPI rustbpe, HF tokenizers and tiktoken.

Run from the repository root::

    uv run python -m benchmarks.tokenizer            # 50 MB of real text
    uv run python -m benchmarks.tokenizer --mb 100

Training runs in a fresh subprocess per (implementation, vocab size), so wall time and peak
memory (``ru_maxrss``, which also sees memory allocated by Rust) are not polluted by earlier
runs. Encoding runs in this process (after a warm-up on 2 MB, garbage collector paused while
timing) on the same text, with our 32,768-id tokenizer: tiktoken is
built from our ranks and pattern, HF ``tokenizers`` loads our exported ``tokenizer.json``, PyPI
rustbpe uses its own (identical) merges. The ids of every encoder are checked against ours.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.corpus import corpus_bytes, load_corpus

REPO = Path(__file__).resolve().parents[1]
IMPLS = ("pypi-rustbpe", "hf-tokenizers", "nanochat")
VOCABS = (4096, 32768)
BPT_SAMPLE_BYTES = 2_000_000


def _pattern() -> str:
    from nanochat_rustbpe import DEFAULT_PATTERN

    return DEFAULT_PATTERN


def _sample(docs: list[str], nbytes: int) -> list[str]:
    out: list[str] = []
    total = 0
    for d in docs:
        out.append(d)
        total += len(d.encode("utf-8"))
        if total >= nbytes:
            break
    return out


def _hf_tokenizer(vocab_size: int, docs: list[str]) -> object:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_pattern()), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        show_progress=False,
        min_frequency=0,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(docs, trainer)
    return tok


def train_child(impl: str, vocab_size: int, megabytes: float, save: str | None) -> dict:
    """Train one implementation in this (fresh) process; return time, memory and bytes/token."""
    docs = load_corpus(megabytes)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sample = _sample(docs, BPT_SAMPLE_BYTES)
    t0 = time.perf_counter()
    if impl == "nanochat":
        from nanochat_rustbpe import Tokenizer

        ours = Tokenizer.train(iter(docs), vocab_size)
        seconds = time.perf_counter() - t0
        ntok = sum(map(len, ours.encode_batch(sample)))
        if save:
            ours.save(save)
    elif impl == "pypi-rustbpe":
        import rustbpe

        ref = rustbpe.Tokenizer()
        ref.train_from_iterator(iter(docs), vocab_size, pattern=_pattern())
        seconds = time.perf_counter() - t0
        ntok = sum(map(len, ref.batch_encode(sample)))
    elif impl == "hf-tokenizers":
        hf = _hf_tokenizer(vocab_size, docs)
        seconds = time.perf_counter() - t0
        ntok = sum(len(e.ids) for e in hf.encode_batch(sample))  # type: ignore[attr-defined]
    else:
        raise SystemExit(f"unknown implementation {impl!r}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "impl": impl,
        "vocab": vocab_size,
        "seconds": seconds,
        "peak_mb": peak / 1024,
        "train_mb": (peak - base_rss) / 1024,
        "bytes_per_token": corpus_bytes(sample) / ntok,
    }


def run_training(megabytes: float, save_dir: Path) -> list[dict]:
    """Train every implementation at every vocab size, each in a fresh subprocess."""
    rows = []
    for vocab in VOCABS:
        for impl in IMPLS:
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.tokenizer", "--child", impl]
                + ["--vocab", str(vocab), "--mb", str(megabytes)]
                + ["--save", str(save_dir / f"nanochat-{vocab}.json")],
                cwd=REPO,
                check=True,
                capture_output=True,
                text=True,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"  trained {impl:14s} vocab {vocab:6d}: {row['seconds']:6.2f} s", file=sys.stderr
            )
    return rows


def _rate(nbytes: int, fn: Callable[[], list[list[int]]]) -> tuple[float, list[list[int]]]:
    """MB/s of ``fn`` over ``nbytes`` (garbage collector paused while timing), and its result."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        ids = fn()
        seconds = time.perf_counter() - t0
    finally:
        gc.enable()
    return nbytes / seconds / 1e6, ids


def run_encoding(docs: list[str], tok_path: Path, slow_mb: float) -> list[dict]:
    """Encode `docs` on one thread and batched with each encoder; compare ids with ours."""
    import tiktoken
    import tokenizers
    from nanochat_rustbpe import Tokenizer

    import rustbpe

    threads = os.cpu_count() or 1
    ours = Tokenizer.load(str(tok_path))
    tik = tiktoken.Encoding(
        name="nanochat-bench",
        pat_str=ours.pattern,
        mergeable_ranks=ours.to_tiktoken_ranks(),
        special_tokens={},
    )
    hf_path = tok_path.with_suffix(".hf.json")
    ours.save_hf_json(str(hf_path))
    hf = tokenizers.Tokenizer.from_file(str(hf_path))
    nbytes = corpus_bytes(docs)
    slow = _sample(docs, int(slow_mb * 1e6))
    slow_bytes = corpus_bytes(slow)

    # Warm-up: first calls pay for page faults and empty caches in every library.
    warm = _sample(docs, 2_000_000)
    ours.encode_batch(warm)
    [ours.encode(d) for d in warm]
    tik.encode_ordinary_batch(warm, num_threads=threads)
    [tik.encode_ordinary(d) for d in warm]

    rows = []
    one, ref_ids = _rate(nbytes, lambda: [ours.encode(d) for d in docs])
    many, ids = _rate(nbytes, lambda: ours.encode_batch(docs))
    rows.append(dict(impl="nanochat", mb=nbytes / 1e6, one=one, many=many, same=ids == ref_ids))
    one, ids1 = _rate(nbytes, lambda: [tik.encode_ordinary(d) for d in docs])
    many, ids2 = _rate(nbytes, lambda: tik.encode_ordinary_batch(docs, num_threads=threads))
    rows.append(
        dict(impl="tiktoken", mb=nbytes / 1e6, one=one, many=many, same=ids1 == ids2 == ref_ids)
    )
    ref_slow = ref_ids[: len(slow)]
    one, ids1 = _rate(
        slow_bytes, lambda: [hf.encode(d, add_special_tokens=False).ids for d in slow]
    )
    many, encs = _rate(slow_bytes, lambda: hf.encode_batch(slow, add_special_tokens=False))
    ids2 = [e.ids for e in encs]  # type: ignore[attr-defined]
    rows.append(
        dict(impl="hf-tokenizers", mb=slow_bytes / 1e6, one=one, many=many,
             same=ids1 == ids2 == ref_slow)
    )  # fmt: skip
    pypi = rustbpe.Tokenizer()
    pypi.train_from_iterator(iter(docs), 32768, pattern=ours.pattern)
    one, ids1 = _rate(slow_bytes, lambda: [pypi.encode(d) for d in slow])
    many, ids2 = _rate(slow_bytes, lambda: pypi.batch_encode(slow))
    rows.append(
        dict(impl="pypi-rustbpe", mb=slow_bytes / 1e6, one=one, many=many,
             same=ids1 == ids2 == ref_slow)
    )  # fmt: skip
    return rows


def print_tables(nbytes: int, train: list[dict], enc: list[dict]) -> None:
    """Print the training and encoding tables and the target ratios."""
    threads = os.cpu_count() or 1
    print(f"\ncorpus: {nbytes / 1e6:.1f} MB of real text, {threads} cores\n")
    print("training (fresh process each)")
    print(f"{'impl':16s}{'vocab':>7s}{'time s':>9s}{'peak RSS MB':>13s}{'+train MB':>11s}"
          f"{'bytes/tok':>11s}")  # fmt: skip
    for r in train:
        print(
            f"{r['impl']:16s}{r['vocab']:7d}{r['seconds']:9.2f}{r['peak_mb']:13.0f}"
            f"{r['train_mb']:11.0f}{r['bytes_per_token']:11.3f}"
        )
    print(f"\nencoding (vocab {VOCABS[-1]}, our merges)")
    print(f"{'impl':16s}{'MB':>7s}{'1 thread MB/s':>15s}{f'batched x{threads} MB/s':>20s}"
          f"{'ids == ours':>13s}")  # fmt: skip
    for r in enc:
        print(
            f"{r['impl']:16s}{r['mb']:7.1f}{r['one']:15.2f}{r['many']:20.2f}{str(r['same']):>13s}"
        )
    t = {(r["impl"], r["vocab"]): r["seconds"] for r in train}
    e = {r["impl"]: r for r in enc}
    v = VOCABS[-1]
    print("\ntargets")
    ratio = t[("nanochat", v)] / t[("pypi-rustbpe", v)]
    print(f"  training time vs PyPI rustbpe @ {v}: {ratio:.2f}x (target <= 0.5x)")
    one = e["nanochat"]["one"] / e["tiktoken"]["one"]
    many = e["nanochat"]["many"] / e["tiktoken"]["many"]
    print(f"  encode vs tiktoken, 1 thread: {one:.2f}x (target >= 2x)")
    print(f"  encode vs tiktoken, batched:  {many:.2f}x (target >= 2x)")


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=50, help="megabytes of real text (default 50)")
    ap.add_argument("--slow-mb", type=float, default=5,
                    help="megabytes encoded by the slower encoders (HF, PyPI rustbpe)")  # fmt: skip
    ap.add_argument("--child", choices=IMPLS, help=argparse.SUPPRESS)
    ap.add_argument("--vocab", type=int, default=32768, help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(train_child(args.child, args.vocab, args.mb, args.save)))
        return
    docs = load_corpus(args.mb)
    nbytes = corpus_bytes(docs)
    with tempfile.TemporaryDirectory() as tmp:
        train = run_training(args.mb, Path(tmp))
        enc = run_encoding(docs, Path(tmp) / f"nanochat-{VOCABS[-1]}.json", args.slow_mb)
    print_tables(nbytes, train, enc)


if __name__ == "__main__":
    main()
