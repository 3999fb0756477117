"""Reading local data files with errors that name the file (and line) at fault.

Parquet is read one row group at a time (never the whole file); jsonl line by line, in chunks of
:data:`JSONL_CHUNK_BYTES` (each chunk one unit of a sharded stream, so a stream holds one chunk);
text files whole. ``pyarrow`` is imported inside the functions that need it.
"""

from __future__ import annotations

import glob
import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from nanochat.core.data import DataError

TEXT_SUFFIXES: tuple[str, ...] = (".parquet", ".jsonl", ".txt")
JSONL_CHUNK_BYTES = 2 << 20
"""Lines starting in each 2 MiB of a jsonl file form one unit of the stream."""

T = TypeVar("T")


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
    """The number of row groups of a parquet file, after checking it has a text ``column``.

    Raises:
        DataError: the file is empty, not parquet, has no such column, or the column does not
            hold strings.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_not_empty(path)
    try:
        meta = pq.ParquetFile(path).metadata
        schema = meta.schema.to_arrow_schema()
    except Exception as exc:  # noqa: BLE001 - any read failure is the file's fault
        raise DataError(f"{path}: not a readable parquet file ({exc})") from exc
    names = schema.names
    if column not in names:
        raise DataError(f"{path}: parquet file has no {column!r} column (columns: {names})")
    kind = schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"{path}: parquet column {column!r} holds {kind}, not strings")
    return meta.num_row_groups


def read_parquet_group(path: Path, group: int, column: str = "text") -> list[str | None]:
    """The ``column`` values of one row group of a parquet file (``None`` for null rows).

    Raises:
        DataError: the row group cannot be read, or holds a value that is not a string (names
            the file, row group and row).
    """
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path).read_row_group(group, columns=[column])
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: row group {group} cannot be read ({exc})") from exc
    values = table.column(column).to_pylist()
    for row, value in enumerate(values):
        if value is not None and not isinstance(value, str):
            raise DataError(
                f"{path}: row group {group} row {row}: {column!r} holds "
                f"{type(value).__name__}, not a string"
            )
    return values


def line_number(path: Path, offset: int) -> int:
    """The 1-based number of the line that starts at byte ``offset`` (reads up to it)."""
    newlines = 0
    with path.open("rb") as f:
        left = offset
        while left > 0:
            block = f.read(min(left, 1 << 20))
            if not block:
                break
            newlines += block.count(b"\n")
            left -= len(block)
    return newlines + 1


def where_line(path: Path, offset: int, number: int | None) -> str:
    """``"PATH line N"`` for the line at ``offset`` (``number`` when already known)."""
    return f"{path} line {number if number is not None else line_number(path, offset)}"


def jsonl_chunks(path: Path, chunk_bytes: int = JSONL_CHUNK_BYTES) -> int:
    """How many chunks of ``chunk_bytes`` a jsonl file is read in (at least one).

    Raises:
        DataError: the file is missing or empty.
    """
    check_not_empty(path)
    return max(1, -(-path.stat().st_size // chunk_bytes))


def _json_line(path: Path, raw: bytes, offset: int, number: int | None) -> dict[str, Any] | None:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{where_line(path, offset, number)}: invalid UTF-8 at byte {exc.start} of the line"
        ) from exc
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where_line(path, offset, number)}: malformed JSON ({exc.msg})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{where_line(path, offset, number)}: expected a JSON object")
    return obj


def iter_jsonl_chunk(
    path: Path, chunk: int | None = None, chunk_bytes: int = JSONL_CHUNK_BYTES
) -> Iterator[tuple[int, int | None, dict[str, Any]]]:
    """Yield ``(byte_offset, line_number, object)`` for the non-blank lines of a jsonl file,
    read line by line (never the whole file).

    Args:
        path: the file.
        chunk: read only the lines that start in bytes ``[chunk * chunk_bytes, (chunk + 1) *
            chunk_bytes)``; ``None`` reads every line.
        chunk_bytes: the chunk size.

    The line number is known (counted) when reading from the start of the file and ``None``
    inside a later chunk; errors always name the line (counted then, which reads up to it).

    Raises:
        DataError: the file is empty, or a line is not UTF-8 or not a JSON object (names file
            and line).
    """
    check_not_empty(path)
    start = 0 if chunk is None else chunk * chunk_bytes
    stop = None if chunk is None else start + chunk_bytes
    with path.open("rb") as f:
        number: int | None = 1
        if start > 0:
            number = None
            f.seek(start - 1)
            f.readline()  # the line that began in the chunk before belongs to that chunk
        while True:
            offset = f.tell()
            if stop is not None and offset >= stop:
                return
            raw = f.readline()
            if not raw:
                return
            obj = _json_line(path, raw, offset, number)
            if obj is not None:
                yield offset, number, obj
            if number is not None:
                number += 1


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a jsonl file, line by line.

    Raises:
        DataError: the file is empty, or a line is not UTF-8 or not a JSON object (names file
            and line).
    """
    for offset, number, obj in iter_jsonl_chunk(path):
        yield (number if number is not None else line_number(path, offset)), obj


def jsonl_text(
    path: Path, offset: int, number: int | None, obj: dict[str, Any], field: str = "text"
) -> str | None:
    """The ``field`` of one jsonl record: a string, or ``None`` when it is ``null``.

    Raises:
        DataError: the field is missing or neither a string nor null (names file and line).
    """
    if field not in obj:
        raise DataError(f"{where_line(path, offset, number)}: no {field!r} field")
    value = obj[field]
    if value is not None and not isinstance(value, str):
        raise DataError(
            f"{where_line(path, offset, number)}: {field!r} holds "
            f"{type(value).__name__}, not a string"
        )
    return value


def read_text(path: Path) -> str:
    """A whole UTF-8 text file.

    Raises:
        DataError: the file is missing, empty or not UTF-8 (names the file and line).
    """
    check_not_empty(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1)
        raise DataError(f"{path} line {line}: invalid UTF-8 at byte {column} of the line") from exc


def parse_at(
    parse: Callable[[dict[str, Any], str], T],
    record: dict[str, Any],
    path: Path,
    offset: int,
    number: int | None,
) -> T:
    """``parse(record, where)`` with ``where`` naming the record's file and line.

    The line number of a record deep in a chunk is counted only if ``parse`` fails.
    """
    if number is not None:
        return parse(record, f"{path} line {number}")
    marker = f"{path} line @{offset}@"
    try:
        return parse(record, marker)
    except DataError as exc:
        raise DataError(str(exc).replace(marker, where_line(path, offset, None))) from exc


def in_split(key: str, split: str, val_fraction: float) -> bool:
    """Stable assignment of an item (by its key) to ``train`` or ``val``.

    Args:
        key: a stable identifier of the item (file name and index).
        split: ``train`` or ``val``.
        val_fraction: share of items that go to ``val``.
    """
    is_val = zlib.crc32(key.encode("utf-8")) % 10_000 < val_fraction * 10_000
    return is_val == (split == "val")
