"""Bad data names its file and line; skipped items are counted; big files and mixtures stream."""

from __future__ import annotations

import json
import logging
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from dataset_helpers import make_registry, write_jsonl, write_parquet
from nanochat_datasets import files
from nanochat_datasets.chat import ChatJsonl
from nanochat_datasets.cli import TEXT_PREVIEW, data
from nanochat_datasets.text import TextFiles

from nanochat.core.data import DataError
from nanochat.core.data_refs import TextMixture, open_dataset

MB = 1 << 20


@pytest.fixture(scope="module")
def registry():
    return make_registry()


def _consume(dataset: Any) -> list[Any]:
    return [item for split in dataset.splits() for item, _ in dataset.iter(split, shuffle=False)]


def _chat_line(i: int, reply: str = "fine") -> str:
    messages = [
        {"role": "user", "content": f"question {i}"},
        {"role": "assistant", "content": reply},
    ]
    return json.dumps({"messages": messages})


# --- errors name the file and line ----------------------------------------------------------


@pytest.mark.parametrize("chunk_bytes", [files.JSONL_CHUNK_BYTES, 64])
def test_invalid_utf8_in_jsonl_names_file_and_line(tmp_path: Path, chunk_bytes: int) -> None:
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps({"text": f"document number {i}"}).encode() for i in range(20)]
    lines[13] = b'{"text": "caf\xe9 au lait"}'  # latin-1, not UTF-8
    path.write_bytes(b"\n".join(lines) + b"\n")
    ds = TextFiles([path], val_fraction=0.0, chunk_bytes=chunk_bytes)
    with pytest.raises(DataError, match=f"^{path} line 14: invalid UTF-8 at byte 13"):
        _consume(ds)
    chat = tmp_path / "chat.jsonl"
    chat_lines = [_chat_line(i).encode() for i in range(20)]
    chat_lines[6] = chat_lines[6].replace(b"question", b"qu\xffestion")
    chat.write_bytes(b"\n".join(chat_lines) + b"\n")
    with pytest.raises(DataError, match=f"^{chat} line 7: invalid UTF-8"):
        _consume(ChatJsonl([chat], "chat-jsonl", 0.0, chunk_bytes=chunk_bytes))


def test_invalid_utf8_in_txt_names_file_and_line(registry, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"line one\nline two\nbad \xc3\x28 here\n")
    with pytest.raises(DataError, match=f"^{path} line 3: invalid UTF-8 at byte 4"):
        _consume(open_dataset(f"text-files:{path}", registry))


def test_errors_deep_in_a_chunked_file_give_the_true_line(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    rows = [_chat_line(i) for i in range(300)]
    rows[250] = json.dumps({"messages": [{"role": "user", "content": "no reply"}]})
    path.write_text("\n".join(rows[:100]) + "\n\n" + "\n".join(rows[100:]) + "\n")
    ds = ChatJsonl([path], "chat-jsonl", 0.0, chunk_bytes=1000)
    assert len(ds.units("train")) > 10
    with pytest.raises(DataError, match=f"^{path} line 252: the conversation has no assistant"):
        _consume(ds)
    rows[250] = "[1, 2]"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=f"^{path} line 251: expected a JSON object"):
        _consume(ChatJsonl([path], "chat-jsonl", 0.0, chunk_bytes=1000))


def test_parquet_column_of_the_wrong_type(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3]}), path)
    with pytest.raises(DataError, match=f"^{path}: parquet column 'text' holds int64"):
        _consume(TextFiles([path], val_fraction=0.0))


def test_jsonl_text_of_the_wrong_type(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "ok"}, {"text": "ok"}, {"text": 42}])
    with pytest.raises(DataError, match=f"^{path} line 3: 'text' holds int, not a string"):
        _consume(TextFiles([path], val_fraction=0.0))


# --- skipped items are counted and reported ---------------------------------------------------


def test_null_and_empty_documents_are_skipped_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    parquet = write_parquet(tmp_path / "p.parquet", ["a", None, "b", None, "", "c"], 3)
    jsonl = write_jsonl(tmp_path / "j.jsonl", [{"text": "d"}, {"text": None}, {"text": ""}])
    ds = TextFiles([parquet, jsonl], val_fraction=0.0)
    with caplog.at_level(logging.WARNING):
        docs = _consume(ds)
    assert sorted(docs) == ["a", "b", "c", "d"]
    assert ds.skipped == {"null text": 3, "empty text": 2}
    warned = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert any(str(parquet) in w and "row group 1" in w and "null text" in w for w in warned)
    assert any(str(jsonl) in w and "empty text" in w for w in warned)


def test_data_show_reports_skips_and_cuts_long_fields(tmp_path: Path, monkeypatch) -> None:
    import nanochat.core.registry as core_registry

    monkeypatch.setattr(core_registry, "get_registry", make_registry)
    huge = "x" * 200_000
    path = tmp_path / "long.jsonl"
    path.write_text(_chat_line(0, reply=huge) + "\n")
    result = CliRunner().invoke(data, ["show", f"chat-jsonl:{path}", "--split", "train"])
    assert result.exit_code == 0, result.output
    assert "200,000 characters" in result.output
    assert len(result.output) < 3 * TEXT_PREVIEW
    texts = write_jsonl(tmp_path / "t.jsonl", [{"text": None}, {"text": "kept"}])
    result = CliRunner().invoke(data, ["show", f"text-files:{texts}", "--no-shuffle"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 with null text" in result.output


# --- readers and mixtures stream ------------------------------------------------------------


def _big_jsonl(path: Path, megabytes: int, line: Any) -> Path:
    with path.open("w", encoding="utf-8") as f:
        i = 0
        while f.tell() < megabytes * MB:
            f.write(line(i) + "\n")
            i += 1
    return path


def _peak_bytes(work: Any) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = work()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", ["text-files", "chat-jsonl"])
def test_first_item_of_a_big_jsonl_uses_little_memory(
    registry, tmp_path_factory: pytest.TempPathFactory, kind: str
) -> None:
    root = tmp_path_factory.mktemp(kind)
    if kind == "text-files":
        path = _big_jsonl(root / "big.jsonl", 40, lambda i: json.dumps({"text": f"{i} " * 300}))
    else:
        path = _big_jsonl(root / "big.jsonl", 40, lambda i: _chat_line(i, f"{i} " * 300))
    size = path.stat().st_size
    ds = open_dataset(f"{kind}:{path}", registry)
    (first, _), peak = _peak_bytes(lambda: next(iter(ds.iter("train"))))
    assert first
    assert peak < size / 5, f"peak {peak / MB:.1f} MiB reading one item of {size / MB:.0f} MiB"


def test_a_text_mixture_streams_its_parts(tmp_path: Path, monkeypatch) -> None:
    """Issue 11 must-show 4: two large parts, one unit of one part read for the first item,
    memory far below the data size, and the whole pass still delivers every epoch's items."""
    docs = [[f"part {p} document {i} " + "word " * 200 for i in range(20_000)] for p in range(2)]
    big = [write_parquet(tmp_path / f"part{p}.parquet", docs[p], 1000) for p in range(2)]
    size = sum(len(d) for part in docs for d in part)  # what a list of every document holds
    del docs
    registry = make_registry()
    mixture = open_dataset(f"text-files:{big[0]}:1,text-files:{big[1]}:2", registry)
    assert isinstance(mixture, TextMixture)
    reads: list[tuple[str, int]] = []
    original = TextFiles.read_unit

    def spy(self: TextFiles, split: str, unit: Any) -> list[str]:
        reads.append((unit[0].name, unit[1]))
        return original(self, split, unit)

    monkeypatch.setattr(TextFiles, "read_unit", spy)
    stream = mixture.iter("train", seed=3)
    (first, _), peak = _peak_bytes(lambda: next(stream))
    assert first.startswith("part ") and len(reads) == 1
    assert size > 35 * MB and peak < 4 * MB, f"peak {peak / MB:.1f} MiB for {size / MB} MiB"
    counted = {0: 0, 1: 0}

    def whole_pass() -> None:
        for doc, _ in stream:
            counted[int(doc.split()[1])] += 1

    _, peak = _peak_bytes(whole_pass)
    assert peak < 8 * MB, f"peak {peak / MB:.1f} MiB over a whole pass"
    counted[int(first.split()[1])] += 1
    train = len([d for d, _ in open_dataset(f"text-files:{big[0]}", registry).iter("train")])
    assert counted[0] == train and counted[1] == 2 * len(
        [d for d, _ in open_dataset(f"text-files:{big[1]}", registry).iter("train")]
    )
    assert len(reads) == 20 * 3 + 20 + 20  # every unit once per pass (+ the two counts)


def test_text_mixture_fraction_resume_and_ranks(tmp_path: Path) -> None:
    paths = [
        write_parquet(tmp_path / f"m{p}.parquet", [f"m{p} d{i}" for i in range(40)], 10)
        for p in range(2)
    ]
    registry = make_registry()
    mixture = open_dataset(f"text-files:{paths[0]}:0.5,text-files:{paths[1]}:1", registry)
    everything = [d for d, _ in mixture.iter("train", seed=1)]
    first = [d for d in everything if d.startswith("m0")]
    whole_first = [d for d, _ in open_dataset(f"text-files:{paths[0]}", registry).iter("train")]
    assert 0 < len(first) < len(whole_first) and set(first) <= set(whole_first)
    assert abs(len(first) - len(whole_first) / 2) <= 4  # a seeded half of each row group
    assert everything == [d for d, _ in mixture.iter("train", seed=1)]
    pairs = list(mixture.iter("train", seed=1))
    resumed = [d for d, _ in mixture.iter("train", seed=1, cursor=pairs[17][1])]
    assert resumed == everything[18:]
    shares = [[d for d, _ in mixture.iter("train", rank=r, world_size=3)] for r in range(3)]
    assert sorted(d for share in shares for d in share) == sorted(everything)
    with pytest.raises(DataError, match="has no 'test' split"):
        list(mixture.iter("test"))
