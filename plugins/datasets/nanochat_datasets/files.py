"""Reading local data files with errors that name the file (and line) at fault.

Parquet is read one row group at a time (never the whole file), jsonl line by line, text whole.
``pyarrow`` is imported inside the functions that need it.
"""

from __future__ import annotations

import glob
import json
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nanochat.core.data import DataError

logger = logging.getLogger(__name__)

TEXT_SUFFIXES: tuple[str, ...] = (".parquet", ".jsonl", ".txt")


def resolve_files(spec: str | Path, suffixes: tuple[str, ...] = TEXT_SUFFIXES) -> list[Path]:
    """The data files a path names: a file, a directory (searched recursively) or a glob.

    Args:
        spec: a file, directory or glob pattern (``~`` is expanded).
        suffixes: the file endings to keep from directories and globs.

    Returns:
        The matching files, sorted by path.

    Raises:
        DataError: nothing exists at that path, or no data file matches.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes)
        if not found:
            raise DataError(f"{path}: no {'/'.join(suffixes)} files in this directory")
        return found
    if glob.has_magic(text):
        found = sorted(
            Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).suffix in suffixes
        )
        if not found:
            raise DataError(f"{text}: no {'/'.join(suffixes)} files match this pattern")
        return found
    raise DataError(f"{path}: no such file or directory")


def check_not_empty(path: Path) -> None:
    """Raise a :class:`DataError` naming ``path`` when it is missing or has zero bytes."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if size == 0:
        raise DataError(f"{path}: the file is empty")


def parquet_row_groups(path: Path, column: str = "text") -> int:
    """The number of row groups of a parquet file, after checking it has ``column``.

    Raises:
        DataError: the file is empty, not parquet, or has no such column.
    """
    import pyarrow.parquet as pq

    check_not_empty(path)
    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as exc:  # noqa: BLE001 - any read failure is the file's fault
        raise DataError(f"{path}: not a readable parquet file ({exc})") from exc
    names = meta.schema.names
    if column not in names:
        raise DataError(f"{path}: parquet file has no {column!r} column (columns: {names})")
    return meta.num_row_groups


def read_parquet_group(path: Path, group: int, column: str = "text") -> list[str]:
    """The ``column`` values of one row group of a parquet file."""
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path).read_row_group(group, columns=[column])
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: row group {group} cannot be read ({exc})") from exc
    return [t for t in table.column(column).to_pylist() if t is not None]


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a jsonl file.

    Raises:
        DataError: the file is empty, or a line is not a JSON object (names file and line).
    """
    check_not_empty(path)
    with path.open("r", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {number}: malformed JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise DataError(f"{path} line {number}: expected a JSON object")
            yield number, obj


def read_jsonl_texts(path: Path, field: str = "text") -> list[str]:
    """The ``field`` string of every line of a jsonl file."""
    texts = []
    for number, obj in iter_jsonl(path):
        value = obj.get(field)
        if not isinstance(value, str):
            raise DataError(f"{path} line {number}: no {field!r} string field")
        texts.append(value)
    return texts


def read_text(path: Path) -> str:
    """A whole UTF-8 text file (undecodable bytes replaced)."""
    check_not_empty(path)
    return path.read_text(encoding="utf-8", errors="replace")


def in_split(key: str, split: str, val_fraction: float) -> bool:
    """Stable assignment of an item (by its key) to ``train`` or ``val``.

    Args:
        key: a stable identifier of the item (file name and index).
        split: ``train`` or ``val``.
        val_fraction: share of items that go to ``val``.
    """
    is_val = zlib.crc32(key.encode("utf-8")) % 10_000 < val_fraction * 10_000
    return is_val == (split == "val")
