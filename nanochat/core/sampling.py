"""Choosing the next token of many rows at once, each row with its own settings and seed.

Every row samples with the Gumbel-max trick: ``argmax(logits / T + g)`` with Gumbel noise ``g``
draws from ``softmax(logits / T)``. The noise of row ``r`` for its ``n``-th token is a hash of
``(seed_r, n, token id)``, so a request gives the same tokens for the same seed whether it runs
alone or next to others, with no Python loop over rows. Temperature 0 is greedy; top-k keeps
the ``k`` most likely ids; top-p keeps the smallest set of most likely ids whose probability
reaches ``p``.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, m: int) -> torch.Tensor:
    """``(x * m) mod 2**32`` for ``0 <= x < 2**32`` in int64 without overflow."""
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * m + ((hi * (m & 0xFFFF)) << 16)) & _MASK32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixing function (xor-shift and multiply rounds), elementwise."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniform_noise(seeds: torch.Tensor, counters: torch.Tensor, vocab: int) -> torch.Tensor:
    """Uniform numbers in (0, 1), shape ``(rows, vocab)``, a pure function of (seed, counter, id).

    Args:
        seeds: ``(rows,)`` int64 seeds.
        counters: ``(rows,)`` int64 (which token of the row is being sampled).
        vocab: number of ids.
    """
    ids = torch.arange(vocab, device=seeds.device, dtype=torch.int64)
    row_key = _hash32(_hash32(seeds & _MASK32) ^ _hash32((seeds >> 32) + 0x9E3779B9))
    row_key = _hash32(row_key ^ _mul32(counters & _MASK32, 0x27D4EB2F))
    h = _hash32(row_key[:, None] ^ _mul32(ids, 0x165667B1)[None, :])
    h = _hash32(h + 0x61C88647)
    return (h.to(torch.float64) + 0.5) / 4294967296.0


def filter_logits(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """``logits`` with ids outside each row's top-k / top-p set at ``-inf``.

    Args:
        logits: ``(rows, vocab)`` (already divided by the temperature).
        top_k: ``(rows,)`` int64; ``0`` or ``>= vocab`` keeps every id.
        top_p: ``(rows,)`` float; ``>= 1`` keeps every id.
    """
    vocab = logits.size(-1)
    k = torch.where((top_k <= 0) | (top_k > vocab), vocab, top_k)
    if bool((k >= vocab).all()) and bool((top_p >= 1).all()):
        return logits
    ordered, order = torch.sort(logits, dim=-1, descending=True)
    rank = torch.arange(vocab, device=logits.device)[None, :]
    drop = rank >= k[:, None]
    probs = torch.softmax(ordered.float(), dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # probability of the better ids
    drop |= (before >= top_p[:, None]) & (rank > 0)
    ordered = ordered.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, ordered)


def sample_tokens(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    seeds: torch.Tensor,
    counters: torch.Tensor,
) -> torch.Tensor:
    """The next id of every row, ``(rows,)`` int64.

    Args:
        logits: ``(rows, vocab)`` fp32 logits of the last position.
        temperature: ``(rows,)``; ``<= 0`` is greedy.
        top_k: ``(rows,)`` int64 (0: off).
        top_p: ``(rows,)`` float (1: off).
        seeds: ``(rows,)`` int64 seed of each row's request.
        counters: ``(rows,)`` int64 index of the token being sampled in each row.
    """
    logits = logits.float()
    greedy = temperature <= 0
    if bool(greedy.all()):  # no noise to draw
        return torch.argmax(logits, dim=-1)
    scaled = logits / torch.where(greedy, 1.0, temperature).to(logits.dtype)[:, None]
    scaled = filter_logits(scaled, top_k, top_p)
    noise = uniform_noise(seeds, counters, logits.size(-1)).to(logits.device)
    gumbel = -torch.log(-torch.log(noise)).to(scaled.dtype)
    sampled = torch.argmax(scaled + gumbel, dim=-1)
    return torch.where(greedy, torch.argmax(logits, dim=-1), sampled)
