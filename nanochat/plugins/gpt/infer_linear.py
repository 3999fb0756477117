"""Matrix products against weights laid out for inference (no autograd), and small parameters
read as Python numbers.

A decode step multiplies a few rows by every weight matrix once: matrix-vector products whose
speed is the speed of reading the weights. On a CPU, ``F.linear`` with a handful of rows runs
them on one core (MKL picks one thread for such sizes), so one core's memory bandwidth bounds a
step. :class:`InferenceWeights` keeps, for small row counts on a multi-threaded CPU, each matrix
split into slices of output columns (a few per thread) and stored transposed, ``(S, in, out /
S)``; one batched product then reads the slices on all cores at once (measured in
``benchmarks/inference.py``). Otherwise, and for many rows (prefill, scoring: compute-bound,
where MKL's own threading wins), the product is a plain ``F.linear``.

Derived matrices are cached and rebuilt when a source changes (an optimizer step,
``load_state_dict``, a dtype or device move), like the stacked q/k/v projection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Row counts up to this use the split layout (decode steps of up to this many sequences).
SPLIT_MAX_ROWS = 16
# Slices per thread, where the output width allows: narrow slices keep each product's share of
# the weights small, so several rows (a batch-8 step) multiply 12-15 % faster than with one wide
# slice per thread; one row is as fast either way (benchmarks/README.md).
SLICES_PER_THREAD = 8
# The narrowest slice worth a product of its own.
MIN_SLICE_COLUMNS = 8

_Key = tuple[int, ...]


class InferenceWeights:
    """Caches of weights derived for inference: stacked and split layouts."""

    def __init__(self) -> None:
        self._stacked: dict[tuple[int, ...], tuple[_Key, torch.Tensor]] = {}
        self._split: dict[tuple[int, ...], tuple[_Key, int, torch.Tensor]] = {}
        self._floats: dict[tuple[int, ...], tuple[_Key, list[float]]] = {}

    def floats(self, scalars: torch.Tensor) -> list[float]:
        """A small parameter's values as Python numbers (a scalar of a Python number costs no
        indexing operation and no tensor multiply in a decode step), read again when it
        changed."""
        ids, key = _identity((scalars,))
        held = self._floats.get(ids)
        if held is None or held[0] != key:
            held = (key, [float(v) for v in scalars.detach().float().reshape(-1).tolist()])
            self._floats[ids] = held
        return held[1]

    def stacked(self, *weights: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """``weights`` (each ``(out_i, in)``) stacked into one ``(sum out_i, in)`` matrix (with
        ``dim=1``, side by side: embedding tables read by one lookup)."""
        if len(weights) == 1:
            return weights[0].detach()
        ids, key = _identity(weights)
        ids += (dim,)
        held = self._stacked.get(ids)
        if held is None or held[0] != key:
            held = (key, torch.cat([w.detach() for w in weights], dim=dim))
            self._stacked[ids] = held
        return held[1]

    def linear(self, x: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        """``x @ stacked(weights).T`` (``x``: ``(..., in)``), through the split layout when
        that is faster (CPU, float32, several threads, at most :data:`SPLIT_MAX_ROWS` rows)."""
        threads = torch.get_num_threads()
        rows = x.numel() // x.size(-1)
        out = sum(w.size(0) for w in weights)
        if (
            x.device.type != "cpu"
            or x.dtype != torch.float32
            or threads < 2
            or rows > SPLIT_MAX_ROWS
            or out % threads != 0
        ):
            return F.linear(x, self.stacked(*weights))
        split = self._split_weight(weights, slice_count(out, threads))
        parts, width, cols = split.shape
        y = torch.bmm(x.reshape(1, rows, width).expand(parts, rows, width), split)
        if rows > 1:
            y = y.transpose(0, 1)  # (rows, parts, cols)
        return y.reshape(*x.shape[:-1], parts * cols)

    def _split_weight(self, weights: tuple[torch.Tensor, ...], parts: int) -> torch.Tensor:
        """The stacked matrix as ``parts`` transposed column slices ``(parts, in, out/parts)``."""
        ids, key = _identity(weights)
        held = self._split.get(ids)
        if held is None or held[0] != key or held[1] != parts:
            stacked = torch.cat([w.detach() for w in weights])
            out, width = stacked.shape
            split = stacked.view(parts, out // parts, width).transpose(1, 2).contiguous()
            held = (key, parts, split)
            self._split[ids] = held
        return held[2]


def slice_count(out: int, threads: int) -> int:
    """How many column slices a matrix of ``out`` output columns is split into for ``threads``
    threads: :data:`SLICES_PER_THREAD` per thread when they divide ``out`` into slices of at
    least :data:`MIN_SLICE_COLUMNS`, else one per thread."""
    parts = threads * SLICES_PER_THREAD
    if out % parts == 0 and out // parts >= MIN_SLICE_COLUMNS:
        return parts
    return threads


def _identity(weights: tuple[torch.Tensor, ...]) -> tuple[tuple[int, ...], _Key]:
    """Which tensors (by object) and in what state: their storage (a new one after a dtype or
    device move) and version (bumped by in-place writes: optimizer steps, ``load_state_dict``).
    """
    if len(weights) == 1:
        w = weights[0]
        return (id(w),), (w.data_ptr(), w._version)
    return tuple(map(id, weights)), tuple(v for w in weights for v in (w.data_ptr(), w._version))
