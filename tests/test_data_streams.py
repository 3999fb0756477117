"""Background tokenizing and packing: errors reach the training thread, threads stop, resume."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from nanochat_stages.background import BackgroundWorker
from nanochat_stages.text_recipe import TextBatches
from nanochat_stages.token_stream import TokenStream

from nanochat.core.data import DataError, ListDataset, ShardedDataset
from nanochat.core.registry import get_registry
from nanochat.testing.tokenizer_contract import train_small


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return train_small(get_registry().create("tokenizer", "rustbpe"))


class Breaks(ShardedDataset):
    """Units of documents; reading unit ``broken`` fails (``None``: never)."""

    name = "breaks"

    def __init__(self, units: int, per_unit: int, broken: int | None):
        self.count, self.per_unit, self.broken = units, per_unit, broken

    def units(self, split: str) -> list[int]:
        return list(range(self.count))

    def read_unit(self, split: str, unit: int) -> list[str]:
        if unit == self.broken:
            raise DataError(f"unit {unit} is corrupt")
        return [f"document {unit}-{i} " + "text " * (i % 7) for i in range(self.per_unit)]


def _background_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("tokenize-", "pack-"))]


@pytest.mark.parametrize("attempt", range(5))
def test_an_error_mid_stream_reaches_the_consumer_and_stops_the_thread(
    tokenizer: Any, attempt: int
) -> None:
    stream = TokenStream(
        Breaks(6, 10, broken=3), tokenizer, shuffle=False, encode_batch_size=5, seed=attempt
    )
    taken = 0
    with pytest.raises(DataError, match="unit 3 is corrupt"):
        while True:
            stream.next_doc()
            taken += 1
    assert taken == 30  # units 0..2 came through before the bad one
    assert not stream._worker.alive
    assert not _background_threads()


@pytest.mark.parametrize("attempt", range(3))
def test_a_dataset_too_small_fails_cleanly_through_the_packer(tokenizer: Any, attempt: int) -> None:
    stream = TokenStream(Breaks(2, 0, broken=None), tokenizer, seed=attempt)
    batches = TextBatches(stream, rows=2, row_len=33, buffer=4)
    with pytest.raises(DataError, match="has no documents"):
        batches.next_batch()
    batches.close()
    assert not _background_threads()


def test_background_worker_hands_back_any_exception_and_stops() -> None:
    def produce() -> Any:
        yield 1
        yield 2
        raise ValueError("boom at item 3")

    worker = BackgroundWorker(produce, name="tokenize-test")
    assert [worker.get(), worker.get()] == [1, 2]
    with pytest.raises(ValueError, match="boom at item 3"):
        worker.get()
    assert not worker.alive
    with pytest.raises(StopIteration):
        worker.get()


def test_packed_text_batches_resume_exactly(tokenizer: Any) -> None:
    dataset = Breaks(5, 40, broken=None)

    def batches(state: Any = None) -> TextBatches:
        stream = TokenStream(dataset, tokenizer, state=state["stream"] if state else None)
        return TextBatches(stream, rows=3, row_len=17, buffer=8, state=state)

    straight = batches()
    expected = [straight.next_batch() for _ in range(12)]
    straight.close()
    first = batches()
    got = [first.next_batch() for _ in range(5)]
    saved = first.state()
    first.close()
    second = batches(saved)
    got += [second.next_batch() for _ in range(7)]
    second.close()
    for (x, y), (gx, gy) in zip(expected, got, strict=True):
        assert torch.equal(x, gx) and torch.equal(y, gy)
        assert x.is_contiguous() and torch.equal(x[:, 1:], y[:, :-1])


SCRIPT = """
    from nanochat.core.data import DataError, ShardedDataset
    from nanochat.core.registry import get_registry
    from nanochat.testing.tokenizer_contract import train_small
    from nanochat_stages.text_recipe import TextBatches
    from nanochat_stages.token_stream import TokenStream

    class Endless(ShardedDataset):
        name = "endless"
        def units(self, split):
            return list(range(1000))
        def read_unit(self, split, unit):
            return ["word " * 200 + str(unit)] * 64

    tokenizer = train_small(get_registry().create("tokenizer", "rustbpe"))
    stream = TokenStream(Endless(), tokenizer, encode_batch_size=16)
    batches = TextBatches(stream, rows=2, row_len=65, buffer=8)
    batches.next_batch()
    raise DataError("the training thread fails while the tokenizer thread is busy")
"""


@pytest.mark.slow
def test_a_failing_run_exits_with_its_error_not_an_abort(tmp_path: Path) -> None:
    """The process used to die with ``FATAL: exception not rethrown`` (SIGABRT) about half the
    time: a daemon thread was cut off inside the Rust tokenizer as Python shut down."""
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent(SCRIPT))
    for _ in range(5):
        result = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 1, result.stderr[-2000:]
        assert "FATAL" not in result.stderr
        assert "the training thread fails while the tokenizer thread is busy" in result.stderr


def test_an_empty_validation_split_is_an_error_not_zero_bytes_per_token(tmp_path: Path) -> None:
    from conftest import run_cli

    texts = tmp_path / "three.txt"
    texts.write_text("one document\n\nanother document\n\na third one\n", encoding="utf-8")
    result = run_cli(
        [
            "run",
            "tokenizer",
            "--run",
            "t",
            "-o",
            f"tokenizer.dataset=text-files:{texts}",
            "-o",
            "tokenizer.vocab_size=300",
        ],
        tmp_path,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "the validation split is empty" in result.stderr
    assert not (tmp_path / "runs" / "t" / "tokenizer" / "tokenizer.json.meta").exists()


def test_bits_per_byte_of_a_too_small_split_is_a_data_error(tokenizer: Any) -> None:
    from nanochat.core.evaluation import text_eval_batches

    with pytest.raises(DataError, match="breaks: the 'val' split has fewer than 65 tokens"):
        text_eval_batches(Breaks(1, 0, broken=None), tokenizer, 64, 2, 1024, split="val")


class Conversations(ListDataset):
    """Conversations of varied lengths, some with calculator parts."""

    name = "conversations"
    kind = "chat"

    def load_split(self, split: str) -> list[Any]:
        out = []
        for i in range(600):
            reply: Any = f"answer {i} " + "because " * (i % 37)
            if i % 5 == 0:
                reply = [
                    {"type": "text", "text": f"we compute {i}*3 "},
                    {"type": "python", "text": f"{i}*3"},
                    {"type": "python_output", "text": str(i * 3)},
                    {"type": "text", "text": " done"},
                ]
            question = f"question number {i}: " + "why " * (i % 23)
            out.append(
                [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
            )
        return out


def test_chat_step_counting_tokenizes_only_a_sample(tokenizer: Any, monkeypatch) -> None:
    import nanochat_stages.chat_batches as cb

    from nanochat.core.conversation import render_conversation

    dataset = Conversations()
    exact = sum(min(len(render_conversation(tokenizer, c)), 48) for c, _ in dataset.iter("train"))
    rendered = 0

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal rendered
        rendered += 1
        return render_conversation(*args, **kwargs)

    monkeypatch.setattr(cb, "render_conversation", counting)
    assert cb.count_chat_tokens(dataset, tokenizer, 48, sample=1000) == (600, exact)
    assert rendered == 600  # a split no larger than the sample is counted exactly
    rendered = 0
    count, estimate = cb.count_chat_tokens(dataset, tokenizer, 48, sample=100)
    assert rendered == 100 and count == 600
    assert abs(estimate - exact) < 0.05 * exact, (estimate, exact)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_text_batches_arrive_pinned_for_non_blocking_copies(tokenizer: Any) -> None:
    stream = TokenStream(Breaks(3, 40, broken=None), tokenizer)
    batches = TextBatches(stream, rows=2, row_len=17, buffer=8, pin=True)
    inputs, targets = batches.next_batch()
    batches.close()
    assert inputs.is_pinned() and targets.is_pinned()
    on_device = inputs.to("cuda", non_blocking=True)
    torch.cuda.synchronize()
    assert torch.equal(on_device.cpu(), inputs)


def _short_validation_corpus(path: Path) -> Path:
    """Long training documents, and held-out (val) documents too short for one eval row."""
    from nanochat_datasets import files

    with path.open("w", encoding="utf-8") as f:
        for i in range(400):
            in_val = files.in_split(f"{path.name}@{f.tell()}", "val", 0.01)
            text = f"tiny {i}" if in_val else f"document {i} " + "some words go here " * 400
            f.write(json.dumps({"text": text}) + "\n")
    return path


@pytest.mark.slow
def test_a_pretrain_run_that_fails_after_its_data_threads_start_exits_cleanly(
    tmp_path: Path,
) -> None:
    """Pretraining fails (validation split too small) after its tokenizing and packing threads
    started: each run ends with the one-line error, exit 1, no traceback and no abort. (This
    timing rarely caught the old abort; ``test_a_failing_run_exits_with_its_error_not_an_abort``
    reproduces it reliably.)"""
    from conftest import run_cli

    corpus = _short_validation_corpus(tmp_path / "corpus.jsonl")
    small = [
        *("-o", f"tokenizer.dataset=text-files:{corpus}", "-o", "tokenizer.vocab_size=300"),
        *("-o", "tokenizer.max_chars=200000", "-o", f"pretrain.dataset=text-files:{corpus}"),
        *("-o", "model.depth=2", "-o", "model.head_dim=64", "-o", "model.sequence_len=64"),
        *("-o", "pretrain.device_batch_size=4", "-o", "pretrain.max_steps=5"),
    ]
    result = run_cli(["run", "tokenizer", "--run", "r", *small], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for _ in range(3):
        result = run_cli(["run", "pretrain", "--run", "r", *small], tmp_path)
        assert result.returncode == 1, result.stderr[-2000:]
        assert "FATAL" not in result.stderr and "Traceback" not in result.stderr
        assert "the 'val' split has fewer than 65 tokens" in result.stderr
