"""Shared helpers of the dataset tests: a registry with the datasets plugin, and file makers."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from nanochat.core.plugins import create_plugin_manager
from nanochat.core.registry import Registry


def make_registry() -> Registry:
    """A registry holding only the nanochat-datasets plugin (no entry points scanned)."""
    import nanochat_datasets.plugin

    registry = Registry(create_plugin_manager(), [])
    registry.register(nanochat_datasets.plugin, "nanochat-datasets")
    return registry


def write_parquet(path: Path, texts: list[str], row_group_size: int, column: str = "text") -> Path:
    """A parquet file with one string column, split into row groups of ``row_group_size``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({column: texts}), path, row_group_size=row_group_size)
    return path


def write_jsonl(path: Path, rows: Iterable[Any]) -> Path:
    """A jsonl file with one JSON value per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def key(item: Any) -> str:
    """A hashable, comparable rendering of an item of any kind."""
    if isinstance(item, str):
        return item
    if is_dataclass(item):
        data = asdict(item)
        data.pop("grader", None)
        return json.dumps(data, sort_keys=True)
    return json.dumps(item, sort_keys=True)


def stream(dataset: Any, split: str, **kwargs: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every ``(key, cursor)`` of one iteration."""
    return [(key(item), cursor) for item, cursor in dataset.iter(split, **kwargs)]


def counts(keys: Iterable[str]) -> Counter[str]:
    """A multiset of item keys."""
    return Counter(keys)
