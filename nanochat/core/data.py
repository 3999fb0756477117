"""Dataset contracts: the five kinds of data, the chat schema, and resumable sharded iteration.

Every dataset plugin yields items of one of five kinds:

* ``text``: documents, each a ``str`` (pretraining, tokenizer training).
* ``chat``: conversations, each a list of :class:`Message` (mid-training, SFT).
* ``problems``: :class:`Problem` items, a prompt plus a checkable answer and ``reward`` (RL, evals).
* ``preferences``: :class:`Preference` items, a prompt with a chosen and a rejected reply (DPO).
* ``choices``: :class:`Choice` items, a question, its options, the index of the right one and
  an optional subject (multiple-choice evals: MMLU, ARC, HellaSwag).

The chat schema (rendered to token ids by :mod:`nanochat.core.conversation`)::

    [
        {"role": "system", "content": "You are nanochat."},          # optional, first only
        {"role": "user", "content": "What is 12*7?"},
        {"role": "assistant", "content": [                           # str, or a list of parts
            {"type": "text", "text": "12*7 = "},
            {"type": "python", "text": "12*7"},                      # a calculator/python call
            {"type": "python_output", "text": "84"},                 # what the tool returned
            {"type": "text", "text": "84. #### 84"},
        ]},
    ]

Only assistant messages may hold a list of parts; ``system`` and ``user`` content is a ``str``.

Iteration is the same for every kind: ``dataset.iter(split, rank=, world_size=, seed=, cursor=)``
yields ``(item, cursor)`` pairs, where ``cursor`` is a small JSON-serialisable dict; passing it
back as ``cursor=`` continues with the item after it. :class:`ShardedDataset` implements this once
so that plugins only say how to list and read their units (files, row groups, or one list).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, TypedDict, runtime_checkable

from nanochat.core.errors import NanochatError

DataKind = Literal["text", "chat", "problems", "preferences", "choices"]
DATA_KINDS: tuple[str, ...] = ("text", "chat", "problems", "preferences", "choices")
ROLES: tuple[str, ...] = ("system", "user", "assistant")
PART_TYPES: tuple[str, ...] = ("text", "python", "python_output")

logger = logging.getLogger(__name__)

Cursor = dict[str, Any]
"""A JSON-serialisable position in a dataset stream (see :meth:`ShardedDataset.iter`)."""


class DataError(NanochatError):
    """Bad data or a bad dataset request: names the file (and line) or the dataset at fault."""


class Part(TypedDict):
    """One piece of an assistant message: ``type`` is ``text``, ``python`` or ``python_output``."""

    type: Literal["text", "python", "python_output"]
    text: str


class Message(TypedDict):
    """One chat message; ``content`` is a list of parts only for the ``assistant`` role."""

    role: Literal["system", "user", "assistant"]
    content: str | list[Part]


Conversation = list[Message]
"""The item of a ``chat`` dataset."""


def text_part(text: str) -> Part:
    """A plain-text part of an assistant message."""
    return {"type": "text", "text": text}


def python_part(expr: str) -> Part:
    """A calculator / python call whose source is ``expr``."""
    return {"type": "python", "text": expr}


def python_output_part(output: str) -> Part:
    """The output the tool returned for the preceding ``python`` part."""
    return {"type": "python_output", "text": output}


def message_text(message: Message) -> str:
    """The text of a message with its parts joined (tool calls shown as ``<<expr=out>>``).

    Args:
        message: a message of the chat schema.

    Returns:
        A human-readable string, e.g. for ``nanochat data show``.
    """
    content = message["content"]
    if isinstance(content, str):
        return content
    pieces: list[str] = []
    for part in content:
        if part["type"] == "python":
            pieces.append(f"<<{part['text']}")
        elif part["type"] == "python_output":
            pieces.append(f"={part['text']}>>")
        else:
            pieces.append(part["text"])
    return "".join(pieces)


def validate_conversation(
    messages: Any, where: str = "conversation", require_assistant: bool = True
) -> Conversation:
    """Check that ``messages`` follows the chat schema and return it typed.

    Args:
        messages: the candidate conversation.
        where: what to name in the error (``"file.jsonl line 3"``).
        require_assistant: a conversation to train on needs at least one assistant message;
            ``False`` for prompts (of problems and preference pairs), which end before it.

    Raises:
        DataError: one line saying what is wrong and where.
    """
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: a conversation must be a non-empty list of messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise DataError(f"{where}: message {i} needs a role of {', '.join(ROLES)}")
        if message["role"] == "system" and i != 0:
            raise DataError(f"{where}: a system message may only come first")
        content = message.get("content")
        if isinstance(content, str):
            continue
        if message["role"] != "assistant" or not isinstance(content, list):
            raise DataError(f"{where}: message {i} content must be a string")
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in PART_TYPES:
                raise DataError(
                    f"{where}: message {i} has a part whose type is not one of "
                    f"{', '.join(PART_TYPES)}"
                )
            if not isinstance(part.get("text"), str):
                raise DataError(f"{where}: message {i} has a part without a text string")
    if require_assistant and not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: the conversation has no assistant message to learn from")
    return messages


def exact_match_reward(completion: str, answer: str) -> float:
    """The default grader: 1.0 when the stripped completion equals the answer, else 0.0."""
    return 1.0 if completion.strip() == answer.strip() else 0.0


@dataclass(frozen=True)
class Problem:
    """The item of a ``problems`` dataset.

    Attributes:
        prompt: the conversation to complete (usually one user message).
        answer: the reference answer (e.g. ``"18"``).
        solution: a reference assistant message (worked answer with tool parts), if known.
        grader: ``grader(completion, answer) -> float`` in [0, 1]; exact match by default.
        meta: free-form facts (source, difficulty, id).
    """

    prompt: Conversation
    answer: str
    solution: Message | None = None
    grader: Callable[[str, str], float] = exact_match_reward
    meta: dict[str, Any] = field(default_factory=dict)

    def reward(self, completion: str) -> float:
        """Score a completion (the assistant's text) against the reference answer."""
        return self.grader(completion, self.answer)

    def conversation(self) -> Conversation:
        """Prompt plus reference solution, as a chat item (for SFT on problems).

        Raises:
            DataError: the problem has no reference solution.
        """
        if self.solution is None:
            raise DataError("this problem has no reference solution to train on")
        return [*self.prompt, self.solution]


@dataclass(frozen=True)
class Preference:
    """The item of a ``preferences`` dataset: a prompt, the chosen and the rejected reply."""

    prompt: Conversation
    chosen: Message
    rejected: Message
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Choice:
    """The item of a ``choices`` dataset: one multiple-choice question.

    Attributes:
        question: the question (or, for completion sets like HellaSwag, the context).
        options: the candidate answers, at least two.
        answer: the index of the right option in ``options``.
        subject: the question's subject (MMLU's 57), "" when the set has none.
        meta: free-form facts (source, id).

    Raises:
        DataError: fewer than two options or an answer index outside them.
    """

    question: str
    options: tuple[str, ...]
    answer: int
    subject: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.options) < 2:
            raise DataError(
                f"a multiple-choice question needs two or more options: {self.question!r}"
            )
        if not 0 <= self.answer < len(self.options):
            raise DataError(
                f"answer index {self.answer} is not one of the {len(self.options)} options"
            )


@runtime_checkable
class Dataset(Protocol):
    """What a dataset factory returns."""

    kind: str
    name: str

    def splits(self) -> tuple[str, ...]:
        """The split names this dataset has (``train`` and ``val`` or ``test``)."""
        ...

    def iter(
        self,
        split: str = "train",
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        cursor: Cursor | None = None,
        shuffle: bool = True,
    ) -> Iterator[tuple[Any, Cursor]]:
        """Yield ``(item, cursor_after_item)`` for this rank's share of ``split``."""
        ...


SPLIT_FALLBACKS: dict[str, tuple[str, ...]] = {
    "val": ("val", "test"),
    "validation": ("val", "test"),
    "train": ("train",),
    "test": ("test",),
}
"""Where each requested split is looked for, in order: validation may come from a dataset's test
split when it has no ``val`` (held-out data either way), but ``test`` is never served from
``val`` - asking for test data and silently getting validation data would mislead."""


def resolve_split(split: str, available: Sequence[str], name: str = "dataset") -> str:
    """The split of a dataset that serves a request for ``split``.

    Args:
        split: the requested split (``train``, ``val``, ``validation`` or ``test``).
        available: the dataset's split names.
        name: the dataset's name, for the error.

    Raises:
        DataError: the dataset has no such split; the message names the dataset and its splits.
    """
    for candidate in SPLIT_FALLBACKS.get(split, (split,)):
        if candidate in available:
            return candidate
    raise DataError(
        f"{name} has no {split!r} split; its splits are: {', '.join(available) or 'none'}"
    )


class ShardedDataset:
    """Base class: deterministic shuffle, sharding by rank, and cursors, for any dataset.

    A subclass sets ``kind``, ``name`` and ``split_names`` and implements :meth:`units` (the
    independently readable pieces of a split: files, parquet row groups; one by default) and
    :meth:`read_unit` (the items of one unit, in stored order). Units are shuffled by seed and
    dealt to ranks round robin; when there are fewer units than ranks, each unit's items are
    dealt instead. Items inside a unit are shuffled by seed too.
    """

    kind: str = "text"
    split_names: ClassVar[tuple[str, ...]] = ("train", "val")
    name: str = "dataset"

    def splits(self) -> tuple[str, ...]:
        """The split names of this dataset."""
        return self.split_names

    @property
    def skipped(self) -> dict[str, int]:
        """How many items were skipped while reading, by reason (e.g. ``{"null text": 3}``)."""
        counts: dict[str, int] | None = self.__dict__.get("_skipped")
        if counts is None:
            counts = self.__dict__["_skipped"] = {}
        return counts

    def note_skipped(self, reason: str, where: str, count: int = 1) -> None:
        """Count ``count`` items skipped for ``reason`` and log one warning line naming ``where``.

        Args:
            reason: why, e.g. ``"null text"`` or ``"empty text"``.
            where: the file (and row group or line) the items came from.
            count: how many items.
        """
        if count <= 0:
            return
        self.skipped[reason] = self.skipped.get(reason, 0) + count
        logger.warning("%s: skipped %d item(s) with %s", where, count, reason)

    def units(self, split: str) -> Sequence[Any]:
        """The units of ``split`` in stored order (override for multi-file datasets)."""
        return [None]

    def read_unit(self, split: str, unit: Any) -> Sequence[Any]:
        """The items of one unit of ``split``, in stored order."""
        raise NotImplementedError

    def iter(
        self,
        split: str = "train",
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        cursor: Cursor | None = None,
        shuffle: bool = True,
    ) -> Iterator[tuple[Any, Cursor]]:
        """Yield ``(item, cursor)`` for this rank's share of one pass over ``split``.

        Args:
            split: ``train``, ``val`` or ``test`` (``val`` falls back to ``test``, never the
                other way round; see :func:`resolve_split`).
            rank: this process's rank, ``0 <= rank < world_size``.
            world_size: number of processes; their streams are disjoint and cover the split.
            seed: shuffle seed (use ``seed + epoch`` for a new order per epoch).
            cursor: a cursor yielded earlier with the same arguments, to resume after its item.
            shuffle: ``False`` reads in stored order.

        Raises:
            DataError: bad split, rank or cursor.
        """
        split = resolve_split(split, self.splits(), self.name)
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not in 0..{world_size - 1}")
        where = {
            "split": split,
            "seed": seed,
            "rank": rank,
            "world_size": world_size,
            "shuffle": shuffle,
        }
        start_unit, start_item = 0, 0
        if cursor is not None:
            taken = {k: cursor.get(k) for k in where}
            if taken != where:
                raise DataError(f"{self.name}: cursor was taken for {taken}, not {where}")
            start_unit, start_item = int(cursor["unit"]), int(cursor["item"])
        units = list(self.units(split))
        order = list(range(len(units)))
        if shuffle:
            random.Random(f"{seed}:{split}:units").shuffle(order)
        deal_units = len(units) >= world_size
        mine = order[rank::world_size] if deal_units else order
        for position in range(start_unit, len(mine)):
            index = mine[position]
            items = list(self.read_unit(split, units[index]))
            item_order = list(range(len(items)))
            if shuffle:
                random.Random(f"{seed}:{split}:unit{index}").shuffle(item_order)
            first = start_item if position == start_unit else 0
            for j in range(first, len(item_order)):
                if not deal_units and (j + position) % world_size != rank:
                    continue
                yield items[item_order[j]], {**where, "unit": position, "item": j + 1}


class ListDataset(ShardedDataset):
    """A dataset whose splits are lists built once in memory (small chat / problem sets)."""

    def __init__(self) -> None:
        self._cache: dict[str, list[Any]] = {}

    def load_split(self, split: str) -> list[Any]:
        """Build the items of ``split`` in stored order (called once per split)."""
        raise NotImplementedError

    def items(self, split: str) -> list[Any]:
        """The cached items of ``split``."""
        split = resolve_split(split, self.splits(), self.name)
        if split not in self._cache:
            self._cache[split] = self.load_split(split)
        return self._cache[split]

    def read_unit(self, split: str, unit: Any) -> Sequence[Any]:
        """All the items of the split (a list dataset has one unit)."""
        return self.items(split)

    def __len__(self) -> int:
        return len(self.items("train"))


def take(stream: Iterable[tuple[Any, Cursor]], n: int) -> list[Any]:
    """The first ``n`` items of an ``iter()`` stream, cursors dropped."""
    out: list[Any] = []
    if n <= 0:
        return out
    for item, _ in stream:
        out.append(item)
        if len(out) >= n:
            break
    return out
