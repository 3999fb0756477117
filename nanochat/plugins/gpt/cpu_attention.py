"""Attention of one new token per row over the KV cache on the CPU, by the Rust kernel of
``nanochat-kernels``.

In a decode step each row attends with a single query, so attention is a batch of dot products
over the cached keys and weighted sums of the cached values: reading them is the whole cost.
torch's SDPA, built for blocks of queries, read them at about 11 GB/s in a batch-8 decode step
here; the kernel streams each row's keys and values once, on the threads of torch's own OpenMP
team, and takes each row's span of keys directly (rows at different positions, sliding windows:
no mask). With it alone, a batch-8 decode step of the d4 model was 1.12-1.20x faster in
interleaved runs (``benchmarks/README.md``; ``python -m benchmarks.cpu_kernels`` measures it).

It runs for float32 CPU tensors without autograd; everything else (bf16, CUDA, training, several
new tokens per row) goes through ``F.scaled_dot_product_attention`` as before.
"""

from __future__ import annotations

import torch

from nanochat.plugins.gpt import cpu_kernels

# Floats of keys and values one call reads before it is split over torch's threads: below it,
# starting the threads costs more than they save.
PARALLEL_MIN_FLOATS = 32_768


def usable(q: torch.Tensor) -> bool:
    """Whether :func:`attend_one_token` takes queries ``q`` (``B, H, T, D``): one new token per
    row, float32, on the CPU, without autograd."""
    return (
        q.size(2) == 1
        and q.device.type == "cpu"
        and q.dtype == torch.float32
        and not torch.is_grad_enabled()
        and cpu_kernels.available()
    )


def attend_one_token(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spans: list[tuple[int, int]]
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(D)) v`` for one query per row and head over the keys ``lo <= j <
    hi`` of ``spans[row]``.

    Args:
        q: ``(B, H, 1, D)`` queries (see :func:`usable`).
        k: ``(B, H_kv, L, D)`` keys (a view of the cache; ``H`` a multiple of ``H_kv``).
        v: values, like ``k``.
        spans: per row, the half-open range of keys it sees (non-empty, within ``L``).

    Returns:
        ``(B, H, 1, D)`` float32.
    """
    assert cpu_kernels.compiled is not None
    B, H, _, D = q.shape
    out = torch.empty(B, H, 1, D)
    floats = sum(hi - lo for lo, hi in spans) * k.size(1) * D * 2
    threads = torch.get_num_threads() if floats >= PARALLEL_MIN_FLOATS else 1
    cpu_kernels.compiled.decode_attention(
        q.view(B, H, D).numpy(),
        k.numpy(),
        v.numpy(),
        out.view(B, H, D).numpy(),
        spans,
        D**-0.5,
        threads,
    )
    return out
