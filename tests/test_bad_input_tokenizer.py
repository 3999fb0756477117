"""Bad input never takes Python down: sizes, tokenizer files, patterns, long texts, Ctrl-C.

Every row feeds the Rust tokenizer (directly, through the ``rustbpe`` adapter or through the
``nanochat`` CLI) one kind of hostile input and checks that it ends in a clear, one-line error
(or, for patterns and long texts, in the right result quickly) instead of an abort, a panic
traceback or a hang.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO, cli_env, run_cli
from nanochat_rustbpe import MAX_VOCAB_SIZE, Tokenizer

from nanochat.core.errors import UsageError
from nanochat.core.registry import Registry
from nanochat.plugins.tokenizers.options import TokenizerOptions
from nanochat.plugins.tokenizers.rustbpe_adapter import (
    META_FILE,
    TOKENIZER_FILE,
    RustBPEFactory,
    TokenizerFileError,
)

SPECIALS = ["<|bos|>", "<|eos|>"]
BAD_SIZES = [10**12, 2**62, 0, -1, 2**64, 10**30, MAX_VOCAB_SIZE + 1]


# --- vocab_size and batch_size ----------------------------------------------------------------


@pytest.mark.parametrize("vocab_size", BAD_SIZES)
def test_rust_api_rejects_vocab_size(vocab_size: int) -> None:
    with pytest.raises(ValueError) as err:
        Tokenizer.train(["hello world"], vocab_size, special_tokens=SPECIALS)
    message = str(err.value)
    assert "\n" not in message
    assert "vocab_size" in message and f"258 to {MAX_VOCAB_SIZE}" in message, message
    assert str(vocab_size) in message


@pytest.mark.parametrize("batch_size", [0, -3, 10**12, 2**62])
def test_rust_api_rejects_batch_size(batch_size: int) -> None:
    with pytest.raises(ValueError, match="batch_size must be an integer from 1 to"):
        Tokenizer.train(["hello world"], 300, batch_size=batch_size)


def test_rust_api_rejects_non_integers() -> None:
    with pytest.raises(TypeError, match="vocab_size must be an integer"):
        Tokenizer.train(["hello"], 300.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train(["hello"], True)  # type: ignore[arg-type]


def test_largest_vocab_size_is_accepted() -> None:
    # The upper end of the range is allowed: training just stops when no pair is left.
    tok = Tokenizer.train(["ab ab"], MAX_VOCAB_SIZE)
    assert tok.merges() == [(97, 98), (32, 256)]


@pytest.mark.parametrize("vocab_size", BAD_SIZES)
def test_adapter_names_the_option(vocab_size: int) -> None:
    factory = RustBPEFactory(TokenizerOptions())
    with pytest.raises(UsageError) as err:
        factory.train(["hello world"], vocab_size, SPECIALS)
    message = str(err.value)
    assert message.startswith("tokenizer.vocab_size must be from 258 ")
    assert str(MAX_VOCAB_SIZE) in message and str(vocab_size) in message


@pytest.mark.parametrize("vocab_size", [300.0, "300", True, None])
def test_adapter_rejects_non_integers(vocab_size: object) -> None:
    with pytest.raises(UsageError, match="tokenizer.vocab_size must be an integer"):
        RustBPEFactory(TokenizerOptions()).train(["hello"], vocab_size, SPECIALS)  # type: ignore[arg-type]


@pytest.mark.parametrize("vocab_size", ["1000000000000", str(2**62), "0", "-1"])
def test_cli_rejects_vocab_size_in_one_line(tmp_path: Path, vocab_size: str) -> None:
    args = ["run", "tokenizer", "--run", "bad", "-o", f"tokenizer.vocab_size={vocab_size}"]
    result = run_cli([*args, "-o", "tokenizer.max_chars=20000"], tmp_path, timeout=120)
    assert result.returncode in (1, 2), (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "panicked" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-2000:]  # no progress bar, no warnings: one line
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "tokenizer.vocab_size" in errors[0] and vocab_size in errors[0]
    assert f"{MAX_VOCAB_SIZE:_}" in errors[0]


# --- crafted tokenizer files ------------------------------------------------------------------


def tokenizer_file(merges: list[list[int]] | str, num_merges: int | None = None, **extra) -> bytes:
    """A nanochat-rustbpe file (the header as ``save`` writes it) with these merges."""
    merges_text = merges if isinstance(merges, str) else json.dumps(merges)
    count = len(merges) if num_merges is None and not isinstance(merges, str) else num_merges
    fields = {"version": 1, "pattern": "a", "special_tokens": [], "num_merges": count, **extra}
    body = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in fields.items())
    return f'{{"format": "nanochat-rustbpe", {body}, "merges": {merges_text}}}'.encode()


def doubling(n: int) -> list[list[int]]:
    """Merges that each double the previous token: ``n`` merges describe ``2**n`` bytes."""
    return [[97, 97]] + [[255 + i, 255 + i] for i in range(1, n)]


CRAFTED = {
    # ~500 bytes: before, this loaded for over 10 minutes, ignoring Ctrl-C.
    "doubling-40": tokenizer_file(doubling(40)),
    # ~650 bytes: before, this aborted the interpreter (memory allocation failed).
    "doubling-50": tokenizer_file(doubling(50)),
    "doubling-4000": tokenizer_file(doubling(4000)),
    "id-out-of-range": tokenizer_file([[97, 98], [256, 5000]]),
    "id-refers-to-itself": tokenizer_file([[97, 98], [257, 97]]),
    "id-above-u32": tokenizer_file([[97, 2**40]]),
    "id-negative": tokenizer_file([[-1, 97]]),
    "id-float": tokenizer_file([[97.5, 97]]),
    "huge-num-merges": tokenizer_file([[97, 98]], num_merges=2**64 - 1),
    "huge-version": tokenizer_file([[97, 98]], version=10**30),
    "deep-nesting": tokenizer_file("[" * 100_000),
    "truncated": tokenizer_file(doubling(20))[:-40],
    "garbage": b"\x00\xff" * 300,
    "empty": b"",
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_file_is_refused_quickly(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.rbpe"
    path.write_bytes(CRAFTED[name])
    started = time.perf_counter()
    with pytest.raises(ValueError) as err:
        Tokenizer.load(str(path))
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{name} took {elapsed:.2f}s to refuse"
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert "not a nanochat-rustbpe tokenizer file" in message


def test_mutated_files_load_or_fail_with_value_error(tmp_path: Path) -> None:
    # Random damage to a real file: every outcome is a loaded tokenizer or one ValueError.
    tok = Tokenizer.train(["the cat sat on the mat, the hat! " * 20], 330, special_tokens=SPECIALS)
    path = tmp_path / "tok.rbpe"
    tok.save(str(path))
    original = path.read_bytes()
    rng = random.Random(1234)
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(300):
        data = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.4:  # overwrite a digit with another number
                data[pos : pos + 1] = str(rng.choice([0, 1, 255, 256, 300, 2**31, 2**40])).encode()
            elif choice < 0.7:
                data[pos] = rng.randrange(256)
            else:
                del data[pos : pos + rng.randint(1, 20)]
        path.write_bytes(bytes(data))
        try:
            loaded = Tokenizer.load(str(path))
        except ValueError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            outcomes["refused"] += 1
        else:
            assert loaded.decode(loaded.encode("the cat")) == "the cat"
            outcomes["loaded"] += 1
    assert outcomes["refused"] > 100


def test_doubling_file_names_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "tok.rbpe"
    path.write_bytes(CRAFTED["doubling-40"])
    assert len(CRAFTED["doubling-40"]) < 600
    with pytest.raises(ValueError, match=r"longer than \d+ bytes in total"):
        Tokenizer.load(str(path))


def test_pickle_path_is_bounded_too() -> None:
    with pytest.raises(ValueError, match="bytes in total"):
        Tokenizer._from_json(CRAFTED["doubling-50"].decode())


def test_crafted_file_in_the_adapter_is_one_line(tmp_path: Path) -> None:
    directory = tmp_path / "tok"
    directory.mkdir()
    (directory / TOKENIZER_FILE).write_bytes(CRAFTED["doubling-50"])
    (directory / META_FILE).write_text(json.dumps({"implementation": "rustbpe"}))
    with pytest.raises(TokenizerFileError) as err:
        RustBPEFactory(TokenizerOptions()).load(directory)
    assert "\n" not in str(err.value) and str(directory) in str(err.value)


def test_long_legitimate_tokens_still_load(tmp_path: Path) -> None:
    # A tokenizer trained on very repetitive text has tokens of hundreds of kilobytes; the
    # budget must let such a file load again.
    tok = Tokenizer.train(["x" * 300_000], 1000)
    assert max(tok.token_bytes()) >= 100_000
    path = tmp_path / "long.rbpe"
    tok.save(str(path))
    back = Tokenizer.load(str(path))
    assert back.merges() == tok.merges()
    text = "x" * 123_457
    assert back.encode(text) == tok.encode(text)
    assert back.decode(back.encode(text)) == text


# --- patterns that do not cover the text --------------------------------------------------------

UNCOVERED = ["hello, world! 123", "  leading and trailing  ", "!!!", "a-b_c", "é€😀 東京\r\n"]


@pytest.mark.parametrize("pattern", [r"\p{L}+", r"[a-z]", r"(?=x)x", r"\d*"])
def test_uncovered_text_round_trips_in_rust(pattern: str) -> None:
    tok = Tokenizer.train(UNCOVERED * 3, 300, pattern=pattern)
    for text in UNCOVERED:
        ids = tok.encode(text)
        assert tok.decode(ids) == text, (pattern, text, ids)
    assert tok.encode_batch(UNCOVERED) == [tok.encode(t) for t in UNCOVERED]


@pytest.mark.parametrize("name", ["rustbpe", "hf-bpe"])
def test_uncovered_text_round_trips_in_every_plugin(name: str) -> None:
    registry = Registry.load()
    factory = registry.create("tokenizer", name)
    factory.options.pattern = r"\p{L}+"
    tokenizer = factory.train(UNCOVERED * 5, 320, SPECIALS)
    for text in UNCOVERED:
        assert tokenizer.decode(tokenizer.encode(text)) == text, (name, text)


# --- long repetitive text and Ctrl-C --------------------------------------------------------


def test_repetitive_text_is_not_quadratic() -> None:
    # Before: "ab" * 200_000 took 14 s (tokens of 2**k bytes were hashed once per split point).
    for text in ["ab" * 200_000, "x" * 400_000]:
        started = time.perf_counter()
        tok = Tokenizer.train([text], 1000)
        assert time.perf_counter() - started < 3.0
        assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("text", ["ab" * 100_000, "x" * 100_001, "abc" * 5000 + " " + "ab" * 7])
def test_repetitive_text_merges_equal_pypi_rustbpe(text: str) -> None:
    import rustbpe as pypi

    ref = pypi.Tokenizer()
    ref.train_from_iterator(iter([text]), 1000)
    ours = Tokenizer.train([text], 1000)
    assert ours.to_tiktoken_ranks() == {bytes(k): v for k, v in ref.get_mergeable_ranks()}


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["ab", "x"])
def test_megabyte_of_repetition_trains_fast(unit: str) -> None:
    text = unit * 1_000_000
    started = time.perf_counter()
    tok = Tokenizer.train([text], 1000)
    elapsed = time.perf_counter() - started
    assert elapsed < 15.0, f"{unit!r} * 1e6 took {elapsed:.1f}s"  # about 1 s on 2 cores
    assert len(tok.encode(text)) < 10


CHILD = textwrap.dedent(
    r"""
    import random, sys, time
    from nanochat_rustbpe import DEFAULT_PATTERN, Tokenizer
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    pattern = None
    if sys.argv[1] == "huge-text":  # one 100 MB text split by the regex engine: seconds
        texts = ["hello world, " * 8_000_000]
        pattern = DEFAULT_PATTERN.replace(r"\p{N}{1,2}", r"\p{N}{1,3}")
    else:  # random words: over a million merges
        texts = [" ".join("".join(rng.choices(letters, k=12)) for _ in range(400_000))]
    print("training", flush=True)
    try:
        Tokenizer.train(texts, 1 << 24, pattern=pattern)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
        sys.exit(42)
    print("finished", flush=True)
    """
)


@pytest.mark.parametrize(
    ("mode", "delay"), [("random-words", 0.3), ("random-words", 2.5), ("huge-text", 0.5)]
)
def test_ctrl_c_interrupts_training_within_a_second(mode: str, delay: float) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode],
        env=cli_env(None),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "training"
        time.sleep(delay)  # early: counting chunks; later: the merge loop
        assert proc.poll() is None, "training ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        sent = time.perf_counter()
        out, err = proc.communicate(timeout=30)
        waited = time.perf_counter() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 42, (proc.returncode, err[-2000:])
    assert "KeyboardInterrupt" in out and "finished" not in out
    assert waited < 1.5, f"exited {waited:.2f}s after SIGINT"
