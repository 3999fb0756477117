"""Tests of the gpt options of issue 19 and the fused chunked head: exact loss and gradients,
old configs load as today's architecture, cached generation with every option, windows."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nanochat.core.errors import UsageError
from nanochat.core.models import OptimizerSettings
from nanochat.plugins.gpt.factory import GPTFactory
from nanochat.plugins.gpt.head import capped_logits, head_loss
from nanochat.plugins.gpt.model import GPT, GPTConfig
from nanochat.plugins.gpt.muon import Muon
from nanochat.plugins.gpt.options import GPTOptions

TODAY = dict(value_embeds=0, layer_scalars=False, skip_connections=False, window_pattern="L")
EVERYTHING = dict(
    value_embeds=2, layer_scalars=True, skip_connections=True, window_pattern="SL", short_window=5
)
OLD_CONFIG = {  # a config as checkpoints saved it before these options existed
    "vocab_size": 100,
    "n_layer": 3,
    "n_head": 3,
    "n_kv_head": 3,
    "n_embd": 48,
    "head_dim": 16,
    "sequence_len": 32,
    "softcap": 15.0,
    "vocab_multiple": 64,
}


def make(vocab: int = 100, depth: int = 3, **opts) -> GPT:
    """A small GPT with every weight random (``init_weights`` zeroes some)."""
    opts.setdefault("sequence_len", 32)
    factory = GPTFactory(GPTOptions(depth=depth, aspect_ratio=16, head_dim=16, **opts))
    torch.manual_seed(0)
    model = factory.build(factory.config(vocab))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 1.0 / math.sqrt(p.size(-1)))
    return model


@pytest.mark.parametrize("softcap", [0.0, 15.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_chunked_head_equals_plain_path(softcap: float, reduction: str) -> None:
    """Loss and gradients of the fused head equal cross_entropy on materialised logits, with a
    ragged last chunk and ignored targets."""
    torch.manual_seed(1)
    x = torch.randn(37, 24, requires_grad=True)
    w = torch.randn(50, 24, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    targets[::5] = -1
    fused = head_loss(x, w, targets, softcap, reduction, rows=8)
    plain = F.cross_entropy(
        capped_logits(x, w, softcap), targets, ignore_index=-1, reduction=reduction
    )
    torch.testing.assert_close(fused, plain, atol=1e-6, rtol=1e-6)
    upstream = torch.randn_like(plain)
    got = torch.autograd.grad(fused, (x, w), upstream)
    want = torch.autograd.grad(plain, (x, w), upstream)
    for g, h in zip(got, want, strict=True):
        torch.testing.assert_close(g, h, atol=1e-6, rtol=1e-5)
        assert h.abs().max() > 1e-3  # a real gradient, not two zeros


def test_model_loss_and_gradients_equal_the_plain_path() -> None:
    """Through the whole model (padded vocabulary, loss < many chunks): the same loss and the
    same gradient in every parameter as softcapped logits + cross_entropy."""
    model = make(vocab=100, **EVERYTHING).train()
    idx = torch.randint(0, 100, (3, 20))
    targets = torch.randint(0, 100, (3, 20))
    targets[0, :5] = -1
    loss = model(idx, targets)
    fused = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    x = model._trunk(idx, 20)
    logits = model._logits(x)
    plain_loss = F.cross_entropy(logits.view(-1, 100), targets.view(-1), ignore_index=-1)
    plain = torch.autograd.grad(plain_loss, list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(loss, plain_loss, atol=1e-6, rtol=1e-6)
    for (name, _), g, h in zip(model.named_parameters(), fused, plain, strict=True):
        assert (g is None) == (h is None), name
        if g is not None:
            torch.testing.assert_close(g, h, atol=1e-6, rtol=1e-5, msg=name)
    assert model.lm_head.weight.shape[0] == 128  # padded rows get a zero gradient
    lm_grad = fused[[n for n, _ in model.named_parameters()].index("lm_head.weight")]
    assert lm_grad is not None and (lm_grad[100:] == 0).all()


def test_old_config_loads_as_todays_architecture() -> None:
    """A config without the new keys means every new option off: the same parameters, the same
    state-dict names, and the same function as the options of today."""
    config = GPTConfig(**OLD_CONFIG)
    assert (config.value_embeds, config.layer_scalars, config.skip_connections) == (0, False, False)
    assert config.window_pattern == "L"
    old = GPTFactory().build(dict(OLD_CONFIG))
    options = GPTOptions(depth=3, aspect_ratio=16, head_dim=16, sequence_len=32, **TODAY)
    factory = GPTFactory(options)
    today = factory.config(100)
    assert {k: today[k] for k in OLD_CONFIG} == OLD_CONFIG
    new = factory.build(today)
    assert list(old.state_dict()) == list(new.state_dict())
    new.load_state_dict(old.state_dict())
    idx = torch.randint(0, 100, (2, 12))
    torch.testing.assert_close(old.eval()(idx), new.eval()(idx))


def test_defaults_are_recorded_in_the_config() -> None:
    config = GPTFactory(GPTOptions(depth=4)).config(4096)
    defaults = GPTOptions()
    for key in ("value_embeds", "layer_scalars", "skip_connections", "window_pattern"):
        assert config[key] == getattr(defaults, key)
    assert GPTFactory(GPTOptions(depth=1, value_embeds=3)).config(100)["value_embeds"] == 1
    with pytest.raises(UsageError, match="window_pattern"):
        GPTFactory(GPTOptions(window_pattern="SXL")).config(100)


@pytest.mark.parametrize(
    "opts",
    [TODAY, EVERYTHING, {**EVERYTHING, "n_kv_head": 1}, {"window_pattern": "S", "short_window": 3}],
    ids=["today", "everything", "everything-gqa", "windows"],
)
def test_cache_matches_full_sequence(opts: dict) -> None:
    """Prefill, a chunk, then one token at a time equals the whole sequence at once; rows at
    different positions too (the sliding window honoured in the cached path)."""
    model = make(**opts).eval()
    idx = torch.randint(0, 100, (2, 20))
    full = model(idx)
    cache = model.new_cache(batch_size=2, max_len=24)
    steps = [model.forward_cached(idx[:, :6], cache), model.forward_cached(idx[:, 6:11], cache)]
    steps += [model.forward_cached(idx[:, t : t + 1], cache) for t in range(11, 20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
    # rows at different positions: row 1 starts 4 tokens later
    cache = model.new_cache(batch_size=2, max_len=24)
    model.forward_cached(idx[:1, :9], cache, rows=torch.tensor([0]))
    model.forward_cached(idx[1:, :5], cache, rows=torch.tensor([1]))
    both = model.forward_cached(torch.stack([idx[0, 9:12], idx[1, 5:8]]), cache)
    torch.testing.assert_close(both[0], full[0, 9:12], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(both[1], full[1, 5:8], atol=1e-5, rtol=1e-4)


def test_short_window_hides_older_tokens() -> None:
    """A layer with window w: its output at position p does not depend on tokens before
    p - w + 1, in the full pass and in the cached pass; a full layer's does."""
    model = make(depth=2, window_pattern="S", short_window=4).eval()
    attn = model.block_list()[0].attn
    assert attn.window == 4 and model.block_list()[1].attn.window == 0
    torch.manual_seed(2)
    x = torch.randn(1, 12, 32)
    cos_sin = model.cos[:, :12], model.sin[:, :12]
    with torch.no_grad():
        y = attn(x, cos_sin)
        x2 = x.clone()
        x2[0, :5] = torch.randn(5, 32)  # outside the window of every position >= 8
        y2 = attn(x2, cos_sin)
    torch.testing.assert_close(y[0, 8:], y2[0, 8:])
    assert not torch.allclose(y[0, 5:8], y2[0, 5:8])
    full = make(depth=2, **TODAY).eval().block_list()[0].attn
    with torch.no_grad():
        assert not torch.allclose(full(x, cos_sin)[0, 8:], full(x2, cos_sin)[0, 8:])


def test_new_parameters_are_in_adamw_groups() -> None:
    """Value embeddings join the embedding group and scalars the scalar group (AdamW); Muon
    gets exactly the blocks' matrices; every parameter is in one group once."""
    model = make(**EVERYTHING)
    groups = model.parameter_groups()
    # 3 blocks read a table (table 0: block 0; table 1: blocks 1 and 2): 3 mixes + r, s, skip
    assert len(groups["embedding"]) == 3 and len(groups["scalar"]) == 3 + 3
    assert all(p.ndim < 2 for p in groups["scalar"])
    adamw, muon = GPTFactory().optimizers(model, OptimizerSettings())
    assert isinstance(muon, Muon) and all(p.ndim == 2 for p in muon.param_groups[0]["params"])
    ids = [id(p) for opt in (adamw, muon) for g in opt.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert {id(p) for p in groups["embedding"]} <= {
        id(p) for g in adamw.param_groups for p in g["params"]
    }


def test_new_options_train() -> None:
    """A few steps with every option on lower the loss, and every new scalar moves."""
    model = make(**EVERYTHING).train()
    opts = GPTFactory().optimizers(model, OptimizerSettings())
    idx = torch.randint(0, 100, (4, 17))
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = []
    for _ in range(8):
        loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        for opt in opts:
            opt.step()
        model.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
    for name in ("resid_lambdas", "x0_lambdas", "skip_weights", "blocks.0.attn.ve_lambdas"):
        assert not torch.equal(start[name], dict(model.named_parameters())[name]), name
