"""nanochat_kernels: CPU kernels for nanochat's generation hot path, written in Rust.

:func:`decode_attention` is the attention of one new token per row over the keys and values a KV
cache holds for that row (float32 buffers; the GIL is released while it runs).
"""

from __future__ import annotations

from nanochat_kernels._kernels import PANEL, decode_attention, panel_matmul

__all__ = ["PANEL", "decode_attention", "panel_matmul"]
