"""Loading splits through the ``datasets`` library: from the hub, or from a local copy.

The hub is probed with one short TCP connection first, so that an offline machine fails (or falls
back) in a second instead of after the library's minute of retries.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from nanochat.core.data import Conversation, DataError, ListDataset
from nanochat_datasets import files
from nanochat_datasets.chat import record_conversation
from nanochat_datasets.options import SmoltalkOptions

SPLIT_ALIASES = {"val": ("val", "validation", "test"), "test": ("test", "validation", "val")}


@functools.cache
def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub (``$HF_ENDPOINT``) accepts a TCP connection.

    ``HF_HUB_OFFLINE=1`` or ``HF_DATASETS_OFFLINE=1`` answer ``False`` without trying.
    """
    if any(
        os.environ.get(k, "") in ("1", "true", "yes")
        for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    ):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def load_hub_split(name: str, split: str, config: str | None = None) -> Iterable[dict[str, Any]]:
    """Rows of one split of a hub dataset.

    Raises:
        DataError: the hub is out of reach or the load failed.
    """
    if not hub_reachable():
        raise DataError(f"cannot reach the Hugging Face hub to load {name!r} (offline?)")
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # noqa: BLE001 - any hub failure becomes one line
        raise DataError(f"loading {name!r} split {split!r} from the hub failed: {exc}") from exc


def _split_files(paths: list[Path], split: str) -> list[Path]:
    for alias in SPLIT_ALIASES.get(split, (split,)):
        chosen = [p for p in paths if alias in p.name]
        if chosen:
            return chosen
    raise DataError(f"no file for split {split!r} among {', '.join(p.name for p in paths)}")


def load_local_split(path: str, split: str) -> Iterable[dict[str, Any]]:
    """Rows of one split of a local copy: a ``save_to_disk`` folder, or parquet/jsonl files.

    Files are matched to the split by name (``train-00000.parquet``, ``test.jsonl``).

    Raises:
        DataError: nothing usable at ``path``.
    """
    import datasets

    root = Path(path).expanduser()
    if (root / "dataset_dict.json").exists() or (root / "state.json").exists():
        loaded = datasets.load_from_disk(str(root))
        if isinstance(loaded, datasets.DatasetDict):
            names = list(loaded)
            for alias in SPLIT_ALIASES.get(split, (split,)):
                if alias in loaded:
                    return loaded[alias]
            raise DataError(f"{root}: no split {split!r} (has {', '.join(names)})")
        return loaded
    paths = files.resolve_files(path, (".parquet", ".jsonl", ".json"))
    chosen = _split_files(paths, split)
    for p in chosen:
        files.check_not_empty(p)
    builder = "parquet" if chosen[0].suffix == ".parquet" else "json"
    try:
        return datasets.load_dataset(
            builder, data_files={"data": [str(p) for p in chosen]}, split="data"
        )
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{chosen[0]}: cannot be loaded ({exc})") from exc


class Smoltalk(ListDataset):
    """SmolTalk conversations (``messages`` column) from the hub or a local copy."""

    kind = "chat"
    split_names = ("train", "test")

    def __init__(self, options: SmoltalkOptions):
        super().__init__()
        self.name = "smoltalk"
        self.options = options

    def load_split(self, split: str) -> list[Conversation]:
        """Every conversation of ``split``."""
        if self.options.path:
            rows = load_local_split(self.options.path, split)
            where = self.options.path
        else:
            rows = load_hub_split(self.options.hub_name, split)
            where = self.options.hub_name
        return [record_conversation(r, f"{where} row {i}") for i, r in enumerate(rows)]


def smoltalk(options: SmoltalkOptions) -> Smoltalk:
    """Factory of ``smoltalk``."""
    return Smoltalk(options)
