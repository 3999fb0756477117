"""Dataset references: ``fineweb``, ``text-files:/data/*.txt``, ``smoltalk:1,gsm8k:4``.

A reference is one dataset name (short or ``plugin/name``), optionally followed by ``:PATH`` for
datasets that read files, or a comma-separated mixture of ``name:EPOCHS`` (or
``name:PATH:EPOCHS``) terms. In a mixture
``EPOCHS`` is how many passes over that dataset go into one pass over the mixture (``0.5`` takes a
seeded half, ``4`` repeats it four times); the mixed items are shuffled by the iteration seed, so
the order is deterministic. A ``problems`` dataset joins a ``chat`` mixture as its prompts with
reference solutions.

A ``text`` mixture streams: its units are every part's units (files, row groups) once per pass,
shuffled together, so it holds one unit in memory at a time however large its parts are. The
other kinds are small enough to mix item by item in memory.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nanochat.core.data import (
    DATA_KINDS,
    Cursor,
    DataError,
    Dataset,
    ListDataset,
    Problem,
    ShardedDataset,
    resolve_split,
)


@dataclass(frozen=True)
class DatasetTerm:
    """One term of a reference: a dataset name with a path argument or a mixture weight."""

    name: str
    path: str | None = None
    epochs: float | None = None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_ref(ref: str) -> list[DatasetTerm]:
    """Split a dataset reference into its terms.

    Args:
        ref: e.g. ``"gsm8k"``, ``"text-files:/data"``, ``"smoltalk:1,gsm8k:4"``.

    Raises:
        DataError: an empty reference, a missing name or a negative weight.
    """
    if not ref.strip():
        raise DataError("empty dataset reference")
    pieces = [p.strip() for p in ref.split(",")] if "," in ref else [ref.strip()]
    terms = []
    for piece in pieces:
        name, sep, arg = piece.partition(":")
        if not name:
            raise DataError(f"dataset reference {ref!r} has a term without a name")
        weight = _number(arg) if sep else None
        path = arg if sep and weight is None else None
        if len(pieces) > 1 and path is not None:
            path, _, last = path.rpartition(":")
            weight = _number(last) if path else None
            if weight is None:
                raise DataError(
                    f"mixture term {piece!r} needs a number of epochs (name:EPOCHS or "
                    "name:PATH:EPOCHS)"
                )
        if weight is not None and weight < 0:
            raise DataError(f"mixture term {piece!r} has a negative weight")
        terms.append(DatasetTerm(name, path=path, epochs=weight))
    return terms


def _with_path(options: Any, name: str, path: str) -> Any:
    fields = {f.name for f in dataclasses.fields(options)}
    if "path" not in fields:
        raise DataError(f"dataset {name!r} does not read files; drop ':{path}' from its name")
    return dataclasses.replace(options, path=path)


def _create(term: DatasetTerm, registry: Any, options: Any = None) -> Dataset:
    resolved = registry.resolve("dataset", term.name)
    if options is None:
        options = resolved.spec.options()
    if term.path is not None:
        options = _with_path(options, term.name, term.path)
    dataset: Dataset = resolved.spec.load_factory()(options)
    if getattr(dataset, "kind", None) not in DATA_KINDS:
        raise DataError(f"dataset {term.name!r} did not say which kind of data it yields")
    return dataset


def open_dataset(
    ref: str,
    registry: Any = None,
    *,
    kind: str | None = None,
    options: Any = None,
    dataset_options: Mapping[str, Any] | None = None,
) -> Dataset:
    """Create the dataset (or mixture) a reference names, through the registry.

    Args:
        ref: a dataset reference (see the module docstring).
        registry: the registry to resolve names in; the process-wide one by default.
        kind: the kind the caller needs; a ``problems`` dataset is viewed as ``chat`` on demand.
        options: an options instance for a single dataset (its defaults when ``None``).
        dataset_options: options by dataset ``plugin/name`` (from ``-o NAME.KEY=VALUE``), used
            for every dataset of the reference that has an entry.

    Raises:
        DataError: a malformed reference or a dataset of the wrong kind.
        UnknownComponentError: a name no plugin provides.
    """
    if registry is None:
        from nanochat.core.registry import get_registry

        registry = get_registry()
    terms = parse_ref(ref)
    chosen = dict(dataset_options or {})

    def create(term: DatasetTerm, given: Any = None) -> Dataset:
        if given is None and chosen:
            given = chosen.get(registry.resolve("dataset", term.name).qualified_name)
        return _create(term, registry, given)

    if len(terms) == 1 and terms[0].epochs is None:
        dataset = create(terms[0], options)
    else:
        parts = [(create(t), 1.0 if t.epochs is None else t.epochs) for t in terms]
        if all(d.kind == "text" for d, _ in parts):
            dataset = TextMixture(parts, name=ref)
        else:
            dataset = Mixture(parts, name=ref, kind=kind)
    if kind is None or dataset.kind == kind:
        return dataset
    if kind == "chat" and dataset.kind == "problems":
        return ProblemsAsChat(dataset)
    raise DataError(f"dataset {ref!r} yields {dataset.kind} data, but {kind} data is needed")


def _as_chat(item: Any) -> Any:
    return item.conversation() if isinstance(item, Problem) else item


class ProblemsAsChat(ShardedDataset):
    """A ``problems`` dataset seen as ``chat``: each prompt with its reference solution."""

    kind = "chat"

    def __init__(self, inner: Dataset):
        self.inner = inner
        self.name = inner.name

    def splits(self) -> tuple[str, ...]:
        """The inner dataset's splits."""
        return self.inner.splits()

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
        """The inner stream with each problem turned into a conversation."""
        stream = self.inner.iter(
            split, rank=rank, world_size=world_size, seed=seed, cursor=cursor, shuffle=shuffle
        )
        for item, after in stream:
            yield _as_chat(item), after


def mixture_splits(parts: Sequence[tuple[Dataset, float]]) -> tuple[str, ...]:
    """The splits every part of a mixture can serve (see :func:`resolve_split`)."""
    out = []
    for split in ("train", "val", "test"):
        try:
            for dataset, _ in parts:
                resolve_split(split, dataset.splits(), dataset.name)
        except DataError:
            continue
        out.append(split)
    return tuple(out)


def _merged_skips(parts: Sequence[tuple[Dataset, float]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for dataset, _ in parts:
        for reason, count in getattr(dataset, "skipped", {}).items():
            merged[reason] = merged.get(reason, 0) + count
    return merged


MixtureUnit = tuple[int, int, int, float]
"""``(part number, pass number, unit index in the part's split, share of the unit taken)``."""


class TextMixture(ShardedDataset):
    """Text datasets mixed by epochs, streamed one unit (file, row group) at a time.

    Each part contributes its units once per whole pass, plus once more for a fractional
    epoch (then a seeded share of each unit's documents); all these units are shuffled and dealt
    by :class:`ShardedDataset`, so nothing is read before it is needed and memory holds one unit.
    A part that is not a :class:`ShardedDataset` counts as a single unit (read whole).
    """

    kind = "text"

    def __init__(self, parts: Sequence[tuple[Dataset, float]], name: str):
        if not parts:
            raise DataError("a mixture needs at least one dataset")
        self.parts = list(parts)
        self.name = name
        self._inner: dict[tuple[int, str], list[Any]] = {}

    def splits(self) -> tuple[str, ...]:
        """The splits every part can serve."""
        return mixture_splits(self.parts)

    @property
    def skipped(self) -> dict[str, int]:
        """Items the parts skipped while reading, by reason."""
        return _merged_skips(self.parts)

    def _part_units(self, number: int, split: str) -> tuple[str, list[Any]]:
        dataset = self.parts[number][0]
        part_split = resolve_split(split, dataset.splits(), dataset.name)
        key = (number, part_split)
        if key not in self._inner:
            if isinstance(dataset, ShardedDataset):
                self._inner[key] = list(dataset.units(part_split))
            else:
                self._inner[key] = [None]
        return part_split, self._inner[key]

    def units(self, split: str) -> list[MixtureUnit]:
        """Every part's units, once per (whole or partial) pass."""
        out: list[MixtureUnit] = []
        for number, (_, epochs) in enumerate(self.parts):
            _, inner = self._part_units(number, split)
            for pass_number in range(math.ceil(epochs)):
                share = min(1.0, epochs - pass_number)
                out.extend((number, pass_number, j, share) for j in range(len(inner)))
        return out

    def read_unit(self, split: str, unit: MixtureUnit) -> list[Any]:
        """The documents of one part's unit (a seeded share of them on a partial pass)."""
        number, _, index, share = unit
        dataset = self.parts[number][0]
        part_split, inner = self._part_units(number, split)
        if isinstance(dataset, ShardedDataset):
            items = list(dataset.read_unit(part_split, inner[index]))
        else:
            items = [item for item, _ in dataset.iter(part_split, shuffle=False)]
        if share < 1.0:
            count = round(share * len(items))
            rng = random.Random(f"mixture:{number}:{split}:{index}")
            items = [items[i] for i in sorted(rng.sample(range(len(items)), count))]
        return items


class Mixture(ListDataset):
    """Several datasets of one kind mixed by epochs, in a seeded, deterministic order.

    The items of every part are held in memory (chat, problems and preference sets are small);
    text mixtures stream instead (:class:`TextMixture`).
    """

    def __init__(self, parts: Sequence[tuple[Dataset, float]], name: str, kind: str | None):
        super().__init__()
        if not parts:
            raise DataError("a mixture needs at least one dataset")
        kinds = {d.kind for d, _ in parts}
        if len(kinds) == 1:
            self.kind = kinds.pop()
        elif kinds == {"chat", "problems"} and kind in (None, "chat"):
            self.kind = "chat"
        else:
            raise DataError(f"mixture {name!r} mixes kinds that do not go together: {kinds}")
        self.parts = list(parts)
        self.name = name

    def splits(self) -> tuple[str, ...]:
        """The splits every part can serve."""
        return mixture_splits(self.parts)

    @property
    def skipped(self) -> dict[str, int]:
        """Items the parts skipped while reading, by reason."""
        return _merged_skips(self.parts)

    def load_split(self, split: str) -> list[Any]:
        """Every part's items, repeated or subsampled by its epochs, part after part."""
        mixed: list[Any] = []
        for number, (dataset, epochs) in enumerate(self.parts):
            part_split = resolve_split(split, dataset.splits(), dataset.name)
            items = [item for item, _ in dataset.iter(part_split, shuffle=False)]
            if self.kind == "chat":
                items = [_as_chat(item) for item in items]
            whole, fraction = divmod(epochs, 1.0)
            mixed.extend(items * int(whole))
            count = round(fraction * len(items))
            if count:
                chosen = random.Random(f"mixture:{number}:{split}").sample(range(len(items)), count)
                mixed.extend(items[i] for i in sorted(chosen))
        return mixed
