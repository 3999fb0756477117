"""Best-fit packing of whole documents into fixed-length rows that start with ``<|bos|>``.

Each row is filled by repeatedly placing the longest buffered document that still fits; only when
no document fits the space left is one cropped (the shortest); the cropped-off rest returns to the
buffer behind a new ``<|bos|>``, so no text is lost. Every
document begins with ``<|bos|>``, so every row does too. With ``pad`` set, nothing is ever cropped:
a row whose space no buffered document fits is finished with ``pad`` instead (documents must then
be at most ``row_len`` long).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

MIN_REMAINDER = 8  # shorter rests of a cropped document are dropped


class BestFitPacker:
    """Packs token documents into rows of ``row_len`` ids, keeping a buffer of documents.

    Args:
        row_len: ids per row (sequence length + 1, for inputs and shifted targets).
        next_doc: returns the next document (1-D int array starting with bos).
        buffer_size: how many documents to choose from.
        pad: fill value for the rest of a row that no document fits (``None``: crop one).
        keep_remainder: when a document is cropped, its rest (after a fresh bos) goes back into
            the buffer, so long documents are trained on whole rather than only their starts.
    """

    def __init__(
        self,
        row_len: int,
        next_doc: Callable[[], np.ndarray],
        buffer_size: int = 128,
        pad: int | None = None,
        keep_remainder: bool = True,
    ):
        self.row_len = row_len
        self.keep_remainder = keep_remainder
        self.pad = pad
        self.next_doc = next_doc
        self.buffer_size = buffer_size
        self.buffer: list[np.ndarray] = []
        self.lengths = np.zeros(0, dtype=np.int64)

    def _refill(self) -> None:
        added = []
        while len(self.buffer) < self.buffer_size:
            doc = self.next_doc()
            if len(doc) == 0:
                continue
            self.buffer.append(doc)
            added.append(len(doc))
        if added:
            self.lengths = np.concatenate([self.lengths, np.asarray(added, dtype=np.int64)])

    def _put_back(self, doc: np.ndarray) -> None:
        self.buffer.append(doc)
        self.lengths = np.append(self.lengths, len(doc))

    def _take(self, index: int) -> np.ndarray:
        doc = self.buffer.pop(index)
        self.lengths = np.delete(self.lengths, index)
        return doc

    def next_row(self) -> np.ndarray:
        """One packed row of ``row_len`` ids."""
        row = np.empty(self.row_len, dtype=np.int64)
        position = 0
        while position < self.row_len:
            self._refill()
            space = self.row_len - position
            fits = np.where(self.lengths <= space, self.lengths, -1)
            best = int(fits.argmax())
            if fits[best] < 0 and self.pad is not None:
                row[position:] = self.pad
                break
            if fits[best] < 0:
                best = int(self.lengths.argmin())
                whole = self._take(best)
                doc = whole[:space]
                if self.keep_remainder and len(whole) - space >= MIN_REMAINDER:
                    # the rest of a long document stays in play, re-opened by its bos
                    self._put_back(np.concatenate([whole[:1], whole[space:]]))
            else:
                doc = self._take(best)
            row[position : position + len(doc)] = doc
            position += len(doc)
        return row

    def next_batch(self, rows: int) -> np.ndarray:
        """``rows`` packed rows, shape ``(rows, row_len)``."""
        return np.stack([self.next_row() for _ in range(rows)])

    def state(self) -> dict[str, Any]:
        """The buffered documents (for exact resume)."""
        return {"buffer": [doc.copy() for doc in self.buffer]}

    def snapshot(self) -> list[np.ndarray]:
        """The buffered documents without copying them (cheap; the packer never changes a
        buffered array in place, it only replaces the list's entries)."""
        return list(self.buffer)

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore buffered documents saved by :meth:`state`."""
        self.buffer = [np.asarray(doc, dtype=np.int64) for doc in state["buffer"]]
        self.lengths = np.asarray([len(d) for d in self.buffer], dtype=np.int64)
