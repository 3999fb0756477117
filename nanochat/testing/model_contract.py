"""The checks every model plugin must pass, reusable by third-party plugins.

Run them all with :func:`check_model_factory` on what a model spec's factory returns (built with
small options), or call the single checks. Each raises ``AssertionError`` naming what broke.
They use nothing but :class:`~nanochat.core.models.ModelFactory` and
:class:`~nanochat.core.models.Model`, exactly what stages, evals and the engine use.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import torch

from nanochat.core.checkpoint import CheckpointManager
from nanochat.core.models import GenerationCache, Model, ModelFactory, OptimizerSettings

VOCAB_SIZE = 97  # deliberately not a multiple of anything


def build_small(factory: ModelFactory, vocab_size: int = VOCAB_SIZE, seed: int = 0) -> Model:
    """A model of ``factory`` for ``vocab_size`` ids, after checking its config is JSON."""
    config = factory.config(vocab_size)
    assert isinstance(config, dict), "config() must return a dict"
    assert json.loads(json.dumps(config)) == config, "config() must survive a JSON round trip"
    torch.manual_seed(seed)
    model = factory.build(config)
    assert isinstance(model, torch.nn.Module), "build() must return a torch.nn.Module"
    assert isinstance(model, Model), "the model lacks members of nanochat.core.models.Model"
    return model


def _batch(model: Model, rows: int = 2, length: int | None = None, seed: int = 1) -> torch.Tensor:
    length = min(length or 12, model.sequence_len)
    return torch.randint(
        0, VOCAB_SIZE, (rows, length), generator=torch.Generator().manual_seed(seed)
    )


def check_forward(model: Model) -> None:
    """Logits of shape ``(B, T, vocab)`` in fp32; losses for each reduction agree."""
    assert model.sequence_len >= 8, "sequence_len must be at least 8 for these checks"
    assert model.max_context >= model.sequence_len, "max_context must be >= sequence_len"
    idx = _batch(model)
    logits = model(idx)
    assert logits.shape == (*idx.shape, VOCAB_SIZE), f"logits shape {tuple(logits.shape)}"
    assert logits.dtype == torch.float32, "logits must be fp32"
    targets = torch.roll(idx, -1, dims=1)
    targets[:, -1] = -1  # ignored
    mean = model(idx, targets)
    total = model(idx, targets, loss_reduction="sum")
    each = model(idx, targets, loss_reduction="none")
    assert mean.ndim == 0 and total.ndim == 0, "mean and sum losses must be scalars"
    assert each.shape == (idx.numel(),), f"'none' loss must have shape (B*T,), not {each.shape}"
    counted = int((targets >= 0).sum())
    assert float(each.detach()[targets.reshape(-1) < 0].abs().sum()) == 0.0, (
        "ignored targets carry loss"
    )
    torch.testing.assert_close(total, each.sum(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mean, total / counted, rtol=1e-4, atol=1e-4)
    expected = torch.nn.functional.cross_entropy(
        logits.reshape(-1, VOCAB_SIZE), targets.reshape(-1), ignore_index=-1
    )
    torch.testing.assert_close(mean, expected, rtol=1e-4, atol=1e-4)
    assert math.isfinite(float(mean.detach())), "loss is not finite"


def check_causal(model: Model) -> None:
    """Changing a later token never changes the logits of earlier positions."""
    idx = _batch(model, rows=1)
    cut = idx.size(1) // 2
    other = idx.clone()
    other[0, cut:] = (other[0, cut:] + 1) % VOCAB_SIZE
    torch.testing.assert_close(model(idx)[:, :cut], model(other)[:, :cut], rtol=1e-4, atol=1e-5)


def check_backward(model: Model) -> None:
    """Every parameter gets a finite gradient from the loss (none is left unused)."""
    model.zero_grad(set_to_none=True)
    idx = _batch(model)
    model(idx, torch.roll(idx, -1, dims=1)).backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, f"parameter {name} got no gradient"
            assert torch.isfinite(param.grad).all(), f"parameter {name} has a non-finite gradient"
    model.zero_grad(set_to_none=True)


def check_flops(model: Model) -> None:
    """``flops_per_token`` is a positive int of at least 6 FLOPs per weight of a matmul."""
    flops = model.flops_per_token()
    assert isinstance(flops, int) and flops > 0, "flops_per_token() must be a positive int"
    n_params = sum(p.numel() for p in model.parameters())
    assert flops < 100 * n_params + 10**9, "flops_per_token() is implausibly large"


def check_optimizers(factory: ModelFactory, model: Model) -> None:
    """Every parameter is in exactly one group; every group has ``initial_lr``; a step moves."""
    optimizers = factory.optimizers(model, OptimizerSettings())
    assert optimizers, "optimizers() returned none"
    seen: dict[int, int] = {}
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            assert "initial_lr" in group, "every parameter group needs initial_lr"
            for param in group["params"]:
                seen[id(param)] = seen.get(id(param), 0) + 1
    params = list(model.parameters())
    assert all(seen.get(id(p)) == 1 for p in params), "a parameter is in no group or in several"
    assert len(seen) == len(params), "optimizers hold tensors that are not the model's"
    before = [p.detach().clone() for p in params]
    idx = _batch(model)
    model(idx, torch.roll(idx, -1, dims=1)).backward()
    for optimizer in optimizers:
        optimizer.step()
    model.zero_grad(set_to_none=True)
    moved = sum(not torch.equal(a, p.detach()) for a, p in zip(before, params, strict=True))
    assert moved > 0, "an optimizer step changed no parameter"


def check_state_dict_round_trip(factory: ModelFactory, model: Model) -> None:
    """A second model built from the same config loads the first's tensors and agrees."""
    other = factory.build(factory.config(VOCAB_SIZE))
    other.load_state_dict(model.state_dict())
    idx = _batch(model)
    torch.testing.assert_close(other(idx), model(idx))


def check_checkpoint_round_trip(factory: ModelFactory, model: Model, directory: Path) -> None:
    """Saved as a nanochat checkpoint (safetensors + JSON config) and rebuilt from the saved
    config alone, the model gives the same logits; its config survives the trip unchanged."""
    config = factory.config(VOCAB_SIZE)
    manager = CheckpointManager(Path(directory))
    manager.save(3, model.state_dict(), meta={"model_config": config})
    loaded = manager.load()
    assert loaded.step == 3 and loaded.meta["model_config"] == config, "config changed on disk"
    other = factory.build(loaded.meta["model_config"])
    other.load_state_dict(loaded.model_state())
    other.eval()
    idx = _batch(model)
    with torch.no_grad():
        torch.testing.assert_close(other(idx), model(idx))


@torch.no_grad()
def check_greedy_generation(model: Model, new_tokens: int = 6) -> None:
    """Greedy decoding through the cache (one prefill, then one token per step) picks the same
    tokens as recomputing the whole sequence at every step."""
    prompt = _batch(model, rows=1, length=5)
    new_tokens = min(new_tokens, model.sequence_len - prompt.size(1))
    cache = model.new_cache(1, prompt.size(1) + new_tokens)
    logits = model.forward_cached(prompt, cache)[:, -1]
    cached, plain = [], prompt
    for _ in range(new_tokens):
        token = logits.argmax(-1, keepdim=True)
        cached.append(int(token))
        reference = model(plain)[:, -1]
        assert int(reference.argmax(-1)) == int(token), "cached and uncached greedy tokens differ"
        torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4)
        plain = torch.cat([plain, token], dim=1)
        logits = model.forward_cached(token, cache)[:, -1]
    assert len(cached) == new_tokens


def _check_cache(cache: GenerationCache, rows: int) -> None:
    assert isinstance(cache, GenerationCache), "new_cache() must return a GenerationCache"
    assert cache.batch_size == rows
    assert cache.positions.tolist() == [0] * rows, "a new cache must hold nothing"


@torch.no_grad()
def check_generation_cache(model: Model) -> None:
    """Cached generation (prefill, chunks, single tokens) equals the full forward pass, rows
    keep their own positions, a reset row starts over, and overflowing is a ValueError."""
    idx = _batch(model, rows=2, length=12)
    full = model(idx)
    cache = model.new_cache(2, 12)
    _check_cache(cache, 2)
    assert cache.max_len == 12
    parts = [model.forward_cached(idx[:, :5], cache), model.forward_cached(idx[:, 5:8], cache)]
    parts += [model.forward_cached(idx[:, t : t + 1], cache) for t in range(8, 12)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-4)
    assert cache.positions.tolist() == [12, 12]
    try:
        model.forward_cached(idx[:, :1], cache)
    except ValueError:
        pass
    else:
        raise AssertionError("forward_cached past max_len must raise ValueError")
    # different lengths per row: row 0 holds 3 tokens, row 1 holds 7
    short, long = idx[0:1, :3], idx[1:2, :7]
    cache = model.new_cache(2, 12)
    model.forward_cached(torch.cat([long[:, :4], long[:, :4]]), cache)
    cache.reset([0])
    assert cache.positions.tolist() == [0, 4], "reset([0]) must empty row 0 alone"
    model.forward_cached(torch.cat([short, long[:, 4:7]]), cache)
    nxt = torch.tensor([[5], [6]])
    step = model.forward_cached(nxt, cache)[:, -1]
    alone_short = model(torch.cat([short, nxt[:1]], dim=1))[0, -1]
    alone_long = model(torch.cat([long, nxt[1:]], dim=1))[0, -1]
    torch.testing.assert_close(step[0], alone_short, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(step[1], alone_long, rtol=1e-4, atol=1e-4)
    assert model.new_cache(3).max_len <= model.max_context
    check_cache_rows(model)


@torch.no_grad()
def check_cache_rows(model: Model) -> None:
    """``rows`` runs a subset of cache rows (the others untouched), in any order, and
    ``copy_rows`` shares one prefill between rows."""
    idx = _batch(model, rows=2, length=9)
    a, b = idx[0:1], idx[1:2]
    cache = model.new_cache(3, 12)
    model.forward_cached(a[:, :6], cache, rows=torch.tensor([2]))
    model.forward_cached(b[:, :4], cache, rows=torch.tensor([0]))
    assert cache.positions.tolist() == [4, 0, 6], "rows= must advance only the rows given"
    step = model.forward_cached(torch.cat([a[:, 6:7], b[:, 4:5]]), cache, rows=torch.tensor([2, 0]))
    torch.testing.assert_close(step[0, -1], model(a[:, :7])[0, -1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(step[1, -1], model(b[:, :5])[0, -1], rtol=1e-4, atol=1e-4)
    cache = model.new_cache(3, 12)
    model.forward_cached(a[:, :5], cache, rows=torch.tensor([1]))
    cache.copy_rows(1, [0, 2])
    assert cache.positions.tolist() == [5, 5, 5], "copy_rows must copy the position"
    nxt = torch.tensor([[3], [4], [5]])
    out = model.forward_cached(nxt, cache)[:, -1]
    for row in range(3):
        alone = model(torch.cat([a[:, :5], nxt[row : row + 1]], dim=1))[0, -1]
        torch.testing.assert_close(out[row], alone, rtol=1e-4, atol=1e-4)


def check_model_factory(factory: ModelFactory, directory: Path | None = None) -> dict[str, Any]:
    """Run every check on a model built by ``factory``; return a few facts about it.

    Args:
        factory: what the model spec's factory returned (with small options).
        directory: where the checkpoint check writes (a temporary folder when None).
    """
    assert isinstance(factory, ModelFactory), "the factory lacks config/build/optimizers"
    model = build_small(factory)
    model.eval()
    check_forward(model)
    check_causal(model)
    check_flops(model)
    check_state_dict_round_trip(factory, model)
    if directory is None:
        with tempfile.TemporaryDirectory() as tmp:
            check_checkpoint_round_trip(factory, model, Path(tmp))
    else:
        check_checkpoint_round_trip(factory, model, directory)
    check_generation_cache(model)
    check_greedy_generation(model)
    model.train()
    check_backward(model)
    check_optimizers(factory, model)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "sequence_len": model.sequence_len,
        "max_context": model.max_context,
    }
