"""Sharding and resuming, for a dataset of every kind: ranks are disjoint and cover the split,
and a cursor taken after k items resumes with item k+1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dataset_helpers import counts, key, make_registry, stream, write_jsonl, write_parquet
from nanochat_datasets import options as o

from nanochat.core.data_refs import open_dataset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sharding")
    write_parquet(root / "text" / "a.parquet", [f"parquet doc {i}" for i in range(50)], 7)
    write_jsonl(root / "text" / "b.jsonl", [{"text": f"jsonl doc {i}"} for i in range(13)])
    (root / "text" / "c.txt").write_text("one text file\n", encoding="utf-8")
    for shard in range(4):
        docs = [f"fineweb {shard}-{i}" for i in range(30)]
        write_parquet(root / "fineweb" / f"shard_{shard:05d}.parquet", docs, 8)
    write_jsonl(
        root / "chat" / "messages.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": f"q{i}"},
                    {"role": "assistant", "content": f"a{i}"},
                ]
            }
            for i in range(40)
        ],
    )
    write_jsonl(
        root / "sharegpt" / "sharegpt.jsonl",
        [
            {
                "conversations": [
                    {"from": "human", "value": f"q{i}"},
                    {"from": "gpt", "value": f"a{i}"},
                ]
            }
            for i in range(40)
        ],
    )
    write_jsonl(
        root / "prefs" / "prefs.jsonl",
        [{"prompt": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(40)],
    )
    arc = [
        {
            "id": f"q{i}",
            "question": f"question {i}?",
            "choices": {"text": ["yes", "no", f"maybe {i}"], "label": ["A", "B", "C"]},
            "answerKey": "ABC"[i % 3],
        }
        for i in range(30)
    ]
    write_jsonl(root / "arc" / "test.jsonl", arc)
    hellaswag = [
        {
            "ind": i,
            "activity_label": "Cooking",
            "ctx": f"A cook stirs pot {i} and then",
            "endings": [" stops.", " adds salt.", " leaves.", f" serves {i}."],
            "label": str(i % 4),
        }
        for i in range(30)
    ]
    write_jsonl(root / "hellaswag" / "validation.jsonl", hellaswag)
    return root


def _smoltalk_dir(root: Path) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = root / "smoltalk_local"
    target.mkdir(exist_ok=True)
    rows = [
        [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"yo {i}"}]
        for i in range(25)
    ]
    pq.write_table(pa.table({"messages": rows}), target / "train-00000.parquet")
    return str(target)


CASES: dict[str, tuple[str, Any, str]] = {
    # name -> (dataset ref, options factory(root) or None, split)
    "text-files": (
        "text-files",
        lambda r: o.TextFilesOptions(path=str(r / "text"), val_fraction=0.2),
        "train",
    ),
    "fineweb": ("fineweb", lambda r: o.FinewebOptions(path=str(r / "fineweb")), "train"),
    "demo-text": ("demo-text", None, "val"),
    "chat-messages": ("chat-jsonl", lambda r: o.LocalFileOptions(path=str(r / "chat")), "train"),
    "chat-sharegpt": (
        "chat-jsonl",
        lambda r: o.LocalFileOptions(path=str(r / "sharegpt")),
        "train",
    ),
    "smoltalk-local": ("smoltalk", lambda r: o.SmoltalkOptions(path=_smoltalk_dir(r)), "train"),
    "demo-chat": ("demo-chat", None, "val"),
    "identity": ("identity", None, "train"),
    "gsm8k": ("gsm8k", lambda r: o.Gsm8kOptions(source="bundled"), "test"),
    "arithmetic": (
        "arithmetic",
        lambda r: o.ArithmeticOptions(train_size=60, val_size=10),
        "train",
    ),
    "preferences": (
        "preferences-jsonl",
        lambda r: o.LocalFileOptions(path=str(r / "prefs")),
        "train",
    ),
    "mixture": ("identity:0.5,arithmetic:2", None, "train"),
    "mmlu": ("mmlu", None, "test"),
    "openbookqa": ("openbookqa", None, "test"),
    "siqa": ("siqa", None, "test"),
    "arc-easy": ("arc-easy", lambda r: o.ArcOptions(path=str(r / "arc")), "test"),
    "arc-challenge": ("arc-challenge", lambda r: o.ArcOptions(path=str(r / "arc")), "test"),
    "hellaswag": ("hellaswag", lambda r: o.HellaswagOptions(path=str(r / "hellaswag")), "val"),
}


@pytest.fixture(scope="module")
def datasets_by_case(data_dir: Path) -> dict[str, Any]:
    registry = make_registry()
    made = {}
    for case, (ref, make_options, _) in CASES.items():
        options = make_options(data_dir) if make_options else None
        made[case] = open_dataset(ref, registry, options=options)
    return made


def test_every_kind_and_every_registered_dataset_is_covered(
    datasets_by_case: dict[str, Any],
) -> None:
    kinds = {d.kind for d in datasets_by_case.values()}
    assert kinds == {"text", "chat", "problems", "preferences", "choices"}
    registered = {r.spec.name for r in make_registry().components("dataset")}
    assert registered <= {ref for ref, _, _ in CASES.values()}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_ranks_are_disjoint_and_cover_the_split(
    datasets_by_case: dict[str, Any], case: str, world_size: int
) -> None:
    dataset = datasets_by_case[case]
    split = CASES[case][2]
    everything = counts(k for k, _ in stream(dataset, split, shuffle=False))
    assert sum(everything.values()) > 0
    together: Any = counts([])
    per_rank = []
    for rank in range(world_size):
        keys = [k for k, _ in stream(dataset, split, rank=rank, world_size=world_size, seed=3)]
        per_rank.append(len(keys))
        together += counts(keys)
    assert together == everything
    assert sum(per_rank) == sum(everything.values())


@pytest.mark.parametrize("case", list(CASES))
def test_shuffle_is_deterministic_by_seed(datasets_by_case: dict[str, Any], case: str) -> None:
    dataset = datasets_by_case[case]
    split = CASES[case][2]
    first = [k for k, _ in stream(dataset, split, seed=7)]
    again = [k for k, _ in stream(dataset, split, seed=7)]
    other = [k for k, _ in stream(dataset, split, seed=8)]
    assert first == again
    if len(set(first)) > 2:
        assert first != other


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(("rank", "world_size"), [(0, 1), (1, 2), (2, 3)])
def test_cursor_resumes_with_the_next_item(
    datasets_by_case: dict[str, Any], case: str, rank: int, world_size: int
) -> None:
    import json

    dataset = datasets_by_case[case]
    split = CASES[case][2]
    full = stream(dataset, split, rank=rank, world_size=world_size, seed=11)
    assert full, "this rank's stream should not be empty"
    for k in sorted({1, len(full) // 2, len(full) - 1, len(full)} - {0}):
        cursor = json.loads(json.dumps(full[k - 1][1]))  # cursors survive JSON
        resumed = dataset.iter(split, rank=rank, world_size=world_size, seed=11, cursor=cursor)
        assert [key(item) for item, _ in resumed] == [k_ for k_, _ in full[k:]]


def test_a_cursor_from_other_arguments_is_refused(datasets_by_case: dict[str, Any]) -> None:
    from nanochat.core.errors import NanochatError

    dataset = datasets_by_case["identity"]
    _, cursor = next(iter(dataset.iter("train", seed=1)))
    with pytest.raises(NanochatError, match="cursor"):
        next(iter(dataset.iter("train", seed=2, cursor=cursor)))
