"""Documents of a text dataset, tokenized in a background thread, with a resumable position.

A background thread reads documents in order, encodes them in batches with the tokenizer's
``encode_batch`` (Rust, GIL released) and queues them with the dataset cursor after each. The
consumer's position is the cursor of the last document it took, so resuming is exact however far
the thread had read ahead. When a split runs out, the next epoch starts with a new shuffle seed.
An error in the thread (bad data, a split with no documents) is raised by :meth:`next_doc` in the
consumer's thread, with its original message, and the thread is stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from nanochat.core.data import DataError
from nanochat.core.special_tokens import BOS
from nanochat_stages.background import BackgroundWorker


class TokenStream:
    """Endless stream of ``<|bos|>``-prefixed token documents for one rank.

    Args:
        dataset: a ``text`` dataset.
        tokenizer: a tokenizer with ``encode_batch`` and ``bos_id``/``special_tokens``.
        split: which split to read.
        rank, world_size: this process's share.
        seed: base shuffle seed (epoch ``e`` uses ``seed + e``).
        state: a state from :meth:`state` to resume from.
        shuffle: shuffle documents (``False`` for validation).
        loop: start a new epoch when the split ends (``False``: stop after one pass).
    """

    def __init__(
        self,
        dataset: Any,
        tokenizer: Any,
        split: str = "train",
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        state: dict[str, Any] | None = None,
        shuffle: bool = True,
        loop: bool = True,
        encode_batch_size: int = 128,
        doc_cap: int = 1_000_000,
    ):
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.split = split
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.loop = loop
        self.batch_size = encode_batch_size
        self.doc_cap = doc_cap
        self.bos = tokenizer.special_tokens[BOS]
        self.epoch = 0 if state is None else int(state["epoch"])
        self.cursor = None if state is None else state["cursor"]
        self._pending: list[tuple[np.ndarray, int, Any]] = []
        self._worker = BackgroundWorker(self._produce, name=f"tokenize-{split}-rank{rank}")

    def _produce(self) -> Iterator[list[tuple[np.ndarray, int, Any]]]:
        epoch, cursor = self.epoch, self.cursor
        while True:
            produced = 0
            texts: list[str] = []
            cursors: list[Any] = []
            stream = self.dataset.iter(
                self.split,
                rank=self.rank,
                world_size=self.world_size,
                seed=self.seed + epoch,
                cursor=cursor,
                shuffle=self.shuffle,
            )
            for text, after in stream:
                texts.append(text[: self.doc_cap])
                cursors.append(after)
                if len(texts) >= self.batch_size:
                    produced += len(texts)
                    yield self._encode(texts, cursors, epoch)
                    texts, cursors = [], []
            if texts:
                produced += len(texts)
                yield self._encode(texts, cursors, epoch)
            if not self.loop:
                return
            if produced == 0 and cursor is None:
                raise DataError(
                    f"{self.dataset.name}: split {self.split!r} has no documents for rank "
                    f"{self.rank}"
                )
            epoch, cursor = epoch + 1, None

    def _encode(
        self, texts: list[str], cursors: list[Any], epoch: int
    ) -> list[tuple[np.ndarray, int, Any]]:
        encoded = self.tokenizer.encode_batch(texts)
        return [
            (np.asarray([self.bos, *ids], dtype=np.int64), epoch, after)
            for ids, after in zip(encoded, cursors, strict=True)
        ]

    def next_doc(self) -> np.ndarray:
        """The next document's ids (raises ``StopIteration`` at the end of a non-looping pass)."""
        while not self._pending:
            self._pending = list(reversed(self._worker.get()))
        doc, epoch, cursor = self._pending.pop()
        self.epoch, self.cursor = epoch, cursor
        return doc

    def state(self) -> dict[str, Any]:
        """Where the consumer is: resume with ``TokenStream(..., state=this)``."""
        return {"epoch": self.epoch, "cursor": self.cursor}

    def close(self) -> None:
        """Stop the background thread and wait for it."""
        self._worker.close()
