"""nanochat_kernels: CPU kernels for nanochat's generation hot path, written in Rust.

:func:`decode_attention` is the attention of one new token per row over the keys and values a KV
cache holds for that row; :func:`panel_matmul` multiplies a few rows by a weight matrix stored in
column panels of :data:`PANEL`. Both take float32 buffers (numpy arrays, torch CPU tensors
through ``.numpy()``), release the GIL and split their work over the threads of the process's
OpenMP team (torch's).
"""

from __future__ import annotations

from nanochat_kernels._kernels import PANEL, decode_attention, panel_matmul

__all__ = ["PANEL", "decode_attention", "panel_matmul"]
