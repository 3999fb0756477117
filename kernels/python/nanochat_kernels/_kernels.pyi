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
