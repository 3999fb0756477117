from typing import Any

def decode_attention(
    q: Any,
    k: Any,
    v: Any,
    out: Any,
    spans: list[tuple[int, int]],
    scale: float,
    threads: int = 1,
) -> None:
    """Single-token attention: ``out[r, h] = softmax(scale * q[r, h] . k[r, g(h), j]) . v`` over
    ``spans[r][0] <= j < spans[r][1]`` (``g(h) = h // (heads // kv_heads)``). ``q``, ``out``:
    ``(rows, heads, dim)``; ``k``, ``v``: ``(rows, kv_heads, len, dim)``; float32 buffers,
    ``out`` writable and C-contiguous. Raises ValueError/TypeError for buffers that do not fit."""

PANEL: int
"""Columns per panel of :func:`panel_matmul`'s weight layout (16)."""

def panel_matmul(x: Any, panels: Any, out: Any, threads: int = 1) -> None:
    """``out = x @ W`` for a few rows ``x`` (``(rows, inner)``, each row contiguous) and ``W``
    (``inner x cols``) in column panels: ``panels`` is a C-contiguous ``(cols / PANEL, inner,
    PANEL)`` float32 buffer (``panels[p, k, j] = W[k, p * PANEL + j]``); ``out`` a writable
    C-contiguous ``(rows, cols)`` buffer apart from the inputs. The panels are split over
    ``threads`` threads of the process's OpenMP team. Raises ValueError/TypeError for buffers
    that do not fit."""
