"""Matrix products against weights laid out for inference (no autograd), and small parameters
read as Python numbers.

A decode step multiplies a few rows by every weight matrix once: matrix-vector products whose
speed is the speed of reading the weights. On a CPU, ``F.linear`` with a handful of rows runs
them on one core (MKL picks one thread for such sizes), so one core's memory bandwidth bounds a
step. For small row counts on the CPU, :class:`InferenceWeights` keeps each matrix in the
layout of the panel kernel of ``nanochat-kernels`` (Rust): column panels of 16, ``(out / 16,
in, 16)``, each read front to back with a tile of partial sums in registers, the panels split
over torch's OpenMP threads. For eight rows that is 1.2-2.3x faster than the split layout
below, for one row about as fast, and 1.3-1.6x for the head (``benchmarks/cpu_kernels.py``).
Without the kernels, on a multi-threaded CPU, each matrix is split into slices of output
columns (a few per thread) and stored transposed, ``(S, in, out / S)``; one batched product
then reads the slices on all cores at once (measured in
``benchmarks/inference.py``). Otherwise, and for many rows (prefill, scoring: compute-bound,
where MKL's own threading wins), the product is a plain ``F.linear``.

Derived matrices are cached and rebuilt when a source changes (an optimizer step,
``load_state_dict``, a dtype or device move), like the stacked q/k/v projection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from nanochat.plugins.gpt import cpu_kernels

# Row counts up to this use the panel or split layout (decode steps of up to this many sequences).
SPLIT_MAX_ROWS = 16
# Slices per thread, where the output width allows: narrow slices keep each product's share of
# the weights small, so several rows (a batch-8 step) multiply 12-15 % faster than with one wide
# slice per thread; one row is as fast either way (benchmarks/README.md).
SLICES_PER_THREAD = 8
# The narrowest slice worth a product of its own.
MIN_SLICE_COLUMNS = 8
# Weights (floats) of one product before the panel kernel splits it over torch's threads.
PANEL_PARALLEL_MIN_FLOATS = 65_536

_Key = tuple[int, ...]
# Columns per panel of the panel kernel's weight layout.
PANEL = 16


class InferenceWeights:
    """Caches of weights derived for inference: stacked, panel and split layouts, and small
    parameters as Python numbers."""

    def __init__(self) -> None:
        self._stacked: dict[tuple[int, ...], tuple[_Key, torch.Tensor]] = {}
        self._split: dict[tuple[int, ...], tuple[_Key, int, torch.Tensor]] = {}
        self._floats: dict[tuple[int, ...], tuple[_Key, list[float]]] = {}
        # panels, and the same memory as an array (the kernel's argument, made once)
        self._panels: dict[tuple[int, ...], tuple[_Key, torch.Tensor, Any]] = {}

    def floats(self, scalars: torch.Tensor) -> list[float]:
        """A small parameter's values as Python numbers (a scalar of a Python number costs no
        indexing operation and no tensor multiply in a decode step), read again when it
        changed."""
        ids, key = _identity((scalars,))
        values = scalars.detach().float().reshape(-1).tolist
        return _fresh(self._floats, ids, key, lambda: (key, [float(v) for v in values()]))[1]

    def stacked(self, *weights: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """``weights`` (each ``(out_i, in)``) stacked into one ``(sum out_i, in)`` matrix (with
        ``dim=1``, side by side: embedding tables read by one lookup)."""
        if len(weights) == 1:
            return weights[0].detach()
        ids, key = _identity(weights)
        return _fresh(self._stacked, ids + (dim,), key, lambda: (key, _joined(weights, dim)))[1]

    def linear(self, x: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        """``x @ stacked(weights).T`` (``x``: ``(..., in)``). For at most
        :data:`SPLIT_MAX_ROWS` float32 rows on the CPU: by the panel kernel of
        ``nanochat-kernels`` where installed (widths a multiple of :data:`PANEL`), else through
        the split layout when that is faster (several threads); otherwise ``F.linear``."""
        threads = torch.get_num_threads()
        rows = x.numel() // x.size(-1)
        out = sum(w.size(0) for w in weights)
        if (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and 0 < rows <= SPLIT_MAX_ROWS
            and out % PANEL == 0
            and cpu_kernels.available()
            and not (torch.is_grad_enabled() and _tracked(x, weights))
        ):
            return self._panel_linear(x, weights, rows, out, threads)
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

    def _panel_linear(
        self, x: torch.Tensor, weights: tuple[torch.Tensor, ...], rows: int, out: int, threads: int
    ) -> torch.Tensor:
        """``x @ stacked(weights).T`` by the panel kernel of ``nanochat-kernels``."""
        assert cpu_kernels.compiled is not None
        ids, key = _identity(weights)

        def build() -> tuple[_Key, torch.Tensor, Any]:
            panels = _joined(weights).view(out // PANEL, PANEL, -1).transpose(1, 2).contiguous()
            return key, panels, panels.numpy()

        held = _fresh(self._panels, ids, key, build)
        flat = x.reshape(rows, x.size(-1))
        if flat.requires_grad:
            flat = flat.detach()
        if flat.stride(-1) != 1:
            flat = flat.contiguous()
        y = torch.empty(rows, out)
        if held[1].numel() < PANEL_PARALLEL_MIN_FLOATS:
            threads = 1
        cpu_kernels.compiled.panel_matmul(flat.numpy(), held[2], y.numpy(), threads)
        return y.view(*x.shape[:-1], out)

    def _split_weight(self, weights: tuple[torch.Tensor, ...], parts: int) -> torch.Tensor:
        """The stacked matrix as ``parts`` transposed column slices ``(parts, in, out/parts)``."""
        ids, key = _identity(weights)
        key += (parts,)

        def build() -> tuple[_Key, int, torch.Tensor]:
            stacked = _joined(weights)
            out, width = stacked.shape
            return key, parts, stacked.view(parts, out // parts, width).transpose(1, 2).contiguous()

        return _fresh(self._split, ids, key, build)[2]


_Held = TypeVar("_Held", bound=tuple[Any, ...])


def _fresh(
    store: dict[tuple[int, ...], _Held], ids: tuple[int, ...], key: _Key, build: Callable[[], _Held]
) -> _Held:
    """The entry ``store`` holds for ``ids`` (``(key, derived...)``), made again by ``build``
    when missing or made from weights in another state than ``key``."""
    held = store.get(ids)
    if held is None or held[0] != key:
        held = store[ids] = build()
    return held


def _joined(weights: tuple[torch.Tensor, ...], dim: int = 0) -> torch.Tensor:
    """``weights`` concatenated along ``dim``, outside autograd."""
    return torch.cat([w.detach() for w in weights], dim=dim)


def _tracked(x: torch.Tensor, weights: tuple[torch.Tensor, ...]) -> bool:
    """Whether autograd follows ``x`` or a weight (the kernel's products would not be)."""
    return x.requires_grad or any(w.requires_grad for w in weights)


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
