"""The checks every ``choices`` dataset must pass, reusable by third-party dataset plugins.

Each function takes a dataset (what a ``choices`` dataset spec's factory returns) and raises
``AssertionError`` when the contract is broken. :func:`check_choices_dataset` runs them all.
"""

from __future__ import annotations

import json
from typing import Any

from nanochat.core.data import Choice, resolve_split


def check_items(dataset: Any, split: str, limit: int = 500) -> list[Choice]:
    """The first ``limit`` items in stored order are well-formed :class:`Choice` items."""
    assert dataset.kind == "choices", dataset.kind
    split = resolve_split(split, dataset.splits(), dataset.name)
    items = []
    for item, cursor in dataset.iter(split, shuffle=False):
        assert isinstance(item, Choice), type(item)
        assert isinstance(item.question, str) and item.question.strip(), item
        assert len(item.options) >= 2 and all(isinstance(o, str) for o in item.options), item
        assert 0 <= item.answer < len(item.options), item
        assert isinstance(item.subject, str)
        json.dumps(cursor)  # cursors are JSON-serialisable
        items.append(item)
        if len(items) >= limit:
            break
    assert items, f"{dataset.name} has no {split} items"
    return items


def check_sharding(dataset: Any, split: str, world_size: int = 3) -> None:
    """Ranks get disjoint shares that together are the whole split, each in a fixed order."""
    split = resolve_split(split, dataset.splits(), dataset.name)
    everything = [repr(item) for item, _ in dataset.iter(split, shuffle=False)]
    shares = [
        [repr(item) for item, _ in dataset.iter(split, rank=r, world_size=world_size, seed=1)]
        for r in range(world_size)
    ]
    assert sorted(x for share in shares for x in share) == sorted(everything)
    again = [repr(item) for item, _ in dataset.iter(split, rank=0, world_size=world_size, seed=1)]
    assert again == shares[0], "iteration with the same seed is not deterministic"


def check_resume(dataset: Any, split: str, after: int = 3) -> None:
    """Passing back the cursor of item ``after`` continues with the item after it."""
    split = resolve_split(split, dataset.splits(), dataset.name)
    stream = list(dataset.iter(split, seed=2))
    if len(stream) <= after:
        return
    cursor = stream[after - 1][1]
    rest = [repr(item) for item, _ in dataset.iter(split, seed=2, cursor=cursor)]
    assert rest == [repr(item) for item, _ in stream[after:]]


def check_choices_dataset(dataset: Any, split: str = "test") -> None:
    """Every check of this module."""
    check_items(dataset, split)
    check_sharding(dataset, split)
    check_resume(dataset, split)
