"""Sampling one continuation through the model contract (``new_cache`` + ``forward_cached``).

This is the simple single-prompt path used for samples during training and evaluation; it works
with any model plugin because it uses nothing beyond :class:`~nanochat.core.models.Model`.
"""

from __future__ import annotations

from collections.abc import Container, Iterator

import torch

from nanochat.core.models import Model


@torch.no_grad()
def generate_tokens(
    model: Model,
    prompt: list[int],
    max_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int = 42,
    stop: Container[int] = (),
) -> Iterator[int]:
    """Yield up to ``max_tokens`` ids continuing ``prompt`` (fewer at the model's context end).

    Args:
        model: any model implementing the contract, on its device.
        prompt: the prompt's ids (at least one).
        max_tokens: how many ids to generate at most.
        temperature: 0 for greedy decoding, else the sampling temperature.
        top_k: sample only among the ``top_k`` most likely ids.
        seed: seed of the sampling generator.
        stop: ids that end the generation (the stop id is yielded).
    """
    if not prompt:
        raise ValueError("generation needs a prompt of at least one token")
    budget = min(max_tokens, model.max_context - len(prompt))
    if budget <= 0:
        return
    device = next(iter(model.parameters())).device
    rng = torch.Generator(device=device).manual_seed(seed)
    cache = model.new_cache(1, len(prompt) + budget)
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    for _ in range(budget):
        logits = model.forward_cached(ids, cache)[:, -1, :]
        if temperature > 0:
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                logits = logits.masked_fill(logits < kth, -float("inf"))
            probs = torch.softmax(logits / temperature, dim=-1)
            ids = torch.multinomial(probs, 1, generator=rng)
        else:
            ids = logits.argmax(dim=-1, keepdim=True)
        token = int(ids.item())
        yield token
        if token in stop:
            return
