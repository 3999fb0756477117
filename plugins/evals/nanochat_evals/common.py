"""Pieces every evaluator of this distribution uses: gathering rows over ranks, writing the
per-item jsonl atomically, naming the scored checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch.distributed as dist


def gather(runtime: Any, rows: list[Any]) -> list[Any]:
    """Every rank's ``rows``, concatenated in rank order (the rows themselves in one process)."""
    if not runtime.distributed:
        return rows
    out: list[Any] = [None] * runtime.world_size
    dist.all_gather_object(out, rows)
    return [row for part in out for row in part]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as JSON lines, atomically (a temporary file renamed into place)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def checkpoint_label(ctx: Any) -> str:
    """``<stage>_<step>`` of the checkpoint being scored (``model`` when there is none)."""
    checkpoint = ctx.evaluated_checkpoint
    if checkpoint is None:
        return "model"
    return f"{checkpoint.path.parent.parent.name}_{checkpoint.path.name}"


def dataset_label(ref: str) -> str:
    """A dataset reference as part of a file name: ``mmlu`` stays, ``mmlu:/data/q.jsonl``
    becomes ``mmlu-q``, ``plugin/name`` becomes ``plugin-name``."""
    name, _, path = ref.partition(":")
    label = f"{name}-{Path(path).stem}" if path else name
    return label.replace("/", "-").replace(",", "+").replace(":", "-")
