"""Tests of the built-in ``gpt`` model plugin: shapes, causality, KV cache, GQA, FLOPs, Muon."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nanochat.core.hardware import measure_cpu_matmul_flops, peak_flops
from nanochat.core.models import OptimizerSettings
from nanochat.plugins.gpt.factory import GPTFactory
from nanochat.plugins.gpt.model import GPT, GPTConfig
from nanochat.plugins.gpt.muon import Muon, zeropower_via_newtonschulz5
from nanochat.plugins.gpt.options import GPTOptions

REPO = Path(__file__).resolve().parents[1]


def make(vocab: int = 100, **opts) -> GPT:
    """A GPT from options, with every weight random (``init_weights`` zeroes ``c_proj``)."""
    opts.setdefault("sequence_len", 32)
    factory = GPTFactory(GPTOptions(**opts))
    torch.manual_seed(0)
    model = factory.build(factory.config(vocab))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 1.0 / math.sqrt(p.size(-1)))
    return model.eval()


def expected_params(depth: int, vocab: int, head_dim: int = 128, n_kv_head: int | None = None):
    """Parameter count from the architecture: embedding + head + per-block matrices, and the
    default options' value embeddings (4 tables, capped at depth; a 2-scalar mix in each layer
    that reads one) and per-layer residual scalars (2 per layer)."""
    c = 64 * depth
    h = max(1, math.ceil(c / head_dim))
    kv = n_kv_head or h
    vp = math.ceil(vocab / 64) * 64
    block = c * h * head_dim + 2 * c * kv * head_dim + h * head_dim * c + 2 * c * 4 * c
    tables = min(4, depth)
    ve_layers = len({*range(tables), *range(depth - tables, depth)})
    extra = tables * vp * kv * head_dim + 2 * ve_layers + 2 * depth
    return 2 * vp * c + depth * block + extra


@pytest.mark.parametrize(
    ("depth", "vocab", "head_dim", "n_kv_head"),
    [(1, 100, 128, None), (2, 4096, 128, None), (4, 4000, 128, 1), (6, 65, 64, 2), (3, 50, 32, 3)],
)
def test_shapes_and_parameter_counts(depth, vocab, head_dim, n_kv_head) -> None:
    factory = GPTFactory(GPTOptions(depth=depth, head_dim=head_dim, n_kv_head=n_kv_head))
    config = factory.config(vocab)
    assert json.loads(json.dumps(config)) == config
    model = factory.build(config)
    assert model.num_params() == expected_params(depth, vocab, head_dim, n_kv_head)
    assert config["n_embd"] == 64 * depth and config["n_layer"] == depth
    idx = torch.randint(0, vocab, (2, 7))
    assert model(idx).shape == (2, 7, vocab)
    loss = model(idx, idx)
    assert loss.ndim == 0 and math.isfinite(loss.item())
    assert model(idx, idx, loss_reduction="none").shape == (14,)


def test_exact_count_d4_tiny() -> None:
    # depth 4, vocab 4096: width 256, 2 heads of 128; 2*4096*256 + 4*(4*256*256 + 8*256*256)
    today = GPTOptions(depth=4, value_embeds=0, layer_scalars=False)
    model = GPTFactory(today).build(GPTFactory(today).config(4096))
    assert model.num_params() == 2_097_152 + 3_145_728 == 5_242_880
    # the defaults add 4 value-embedding tables (4096 x 256, one per layer), their mixes (2
    # scalars per layer) and 2 residual scalars per layer
    model = GPTFactory(GPTOptions(depth=4)).build(GPTFactory(GPTOptions(depth=4)).config(4096))
    assert model.num_params() == 5_242_880 + 4 * 4096 * 256 + 4 * 2 + 4 * 2


def test_vocab_padding_and_ignore_index() -> None:
    model = make(vocab=100, depth=1)
    assert model.wte.weight.shape[0] == 128 and model.lm_head.weight.shape[0] == 128
    idx = torch.randint(0, 100, (1, 9))
    targets = idx.clone()
    targets[0, :4] = -1
    per_token = model(idx, targets, loss_reduction="none")
    assert (per_token[:4] == 0).all()
    assert torch.allclose(model(idx, targets), per_token[4:].mean())


def test_causal() -> None:
    model = make(depth=2)
    a = torch.randint(0, 100, (1, 20))
    b = a.clone()
    b[0, 12:] = torch.randint(0, 100, (8,))
    la, lb = model(a), model(b)
    torch.testing.assert_close(la[:, :12], lb[:, :12])
    assert not torch.allclose(la[:, 12:], lb[:, 12:])


@pytest.mark.parametrize("n_kv_head", [None, 1])
def test_kv_cache_matches_full_sequence(n_kv_head) -> None:
    model = make(depth=2, head_dim=32, n_kv_head=n_kv_head)
    idx = torch.randint(0, 100, (2, 16))
    full = model(idx)
    cache = model.new_cache(batch_size=2, max_len=16)
    steps = [model.forward_cached(idx[:, :6], cache)]  # prefill
    steps += [model.forward_cached(idx[:, 6:10], cache)]  # a chunk after a cached prefix
    steps += [model.forward_cached(idx[:, t : t + 1], cache) for t in range(10, 16)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
    assert cache.positions.tolist() == [16, 16]
    with pytest.raises(ValueError, match="full"):
        model.forward_cached(idx[:, :1], cache)


@pytest.mark.parametrize("n_kv_head", [None, 1])
def test_inference_projection_follows_weight_updates(n_kv_head) -> None:
    """Without autograd the q/k/v projections run as one stacked matrix; it equals the three
    separate ones, and is rebuilt after an in-place update (an optimizer step) or a reload."""
    model = make(depth=2, head_dim=32, n_kv_head=n_kv_head)
    idx = torch.randint(0, 100, (2, 12))
    for update in range(3):
        with torch.no_grad():
            fused = model(idx)
        separate = model(idx).detach()  # grad enabled: the training path
        torch.testing.assert_close(fused, separate, atol=1e-5, rtol=1e-4)
        with torch.no_grad():
            if update == 0:
                model.blocks[0].attn.c_k.weight.mul_(1.5)
            else:
                state = {k: v * 0.9 for k, v in model.state_dict().items()}
                model.load_state_dict(state)


def test_cache_rows_keep_their_own_positions() -> None:
    """Two prompts of different lengths decode together, each as if it were alone."""
    model = make(depth=2, head_dim=32, n_kv_head=1)
    short, long = torch.randint(0, 100, (1, 3)), torch.randint(0, 100, (1, 7))
    cache = model.new_cache(batch_size=2, max_len=12)
    cache.reset([1])
    # row 1 prefills 4 tokens while row 0 is reset afterwards: rows advance independently
    model.forward_cached(torch.cat([long[:, :4], long[:, :4]]), cache)
    cache.reset([0])
    model.forward_cached(torch.cat([short, long[:, 4:7]]), cache)
    assert cache.positions.tolist() == [3, 7]
    nxt = torch.tensor([[5], [6]])
    step = model.forward_cached(nxt, cache)[:, -1]
    alone_short = model(torch.cat([short, nxt[:1]], dim=1))[:, -1]
    alone_long = model(torch.cat([long, nxt[1:]], dim=1))[:, -1]
    torch.testing.assert_close(step[0], alone_short[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(step[1], alone_long[0], atol=1e-5, rtol=1e-4)


def test_generate_greedy_matches_argmax() -> None:
    from nanochat.core.engine import Engine, Request, SamplingParams

    model = make(depth=1)
    prompt = [3, 1, 4, 1, 5]

    class Ids:  # the engine needs a tokenizer only to show text
        vocab_size, special_tokens = 100, {}

        def decode(self, ids):
            return " ".join(map(str, ids))

        def encode(self, text):
            return []

    [[result]] = Engine(model, Ids(), slots=1).complete([Request(prompt, SamplingParams(4))])
    out = result.tokens
    ids = list(prompt)
    for _ in range(4):
        ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert out == ids[len(prompt) :]


def test_gqa_equals_mha_with_repeated_kv_heads() -> None:
    gqa = make(depth=2, head_dim=32, n_kv_head=2)  # 4 query heads share 2 KV heads
    mha = make(depth=2, head_dim=32, n_kv_head=4)
    h, kv, d = 4, 2, 32
    with torch.no_grad():
        for name, p in mha.named_parameters():
            src = dict(gqa.named_parameters())[name]
            if name.endswith(("c_k.weight", "c_v.weight")):
                p.copy_(src.view(kv, d, -1).repeat_interleave(h // kv, dim=0).reshape(h * d, -1))
            elif name.startswith("value_embeds."):  # value embeddings are per KV head too
                rows = src.size(0)
                p.copy_(src.view(rows, kv, d).repeat_interleave(h // kv, dim=1).view(rows, -1))
            else:
                p.copy_(src)
    idx = torch.randint(0, 100, (2, 12))
    torch.testing.assert_close(gqa(idx), mha(idx), atol=1e-5, rtol=1e-4)


def test_bad_gqa_config_rejected() -> None:
    with pytest.raises(ValueError, match="divide"):
        GPTConfig(n_head=4, n_kv_head=3)


def test_flops_per_token_hand_count() -> None:
    factory = GPTFactory(GPTOptions(depth=2, sequence_len=16))
    model = factory.build(factory.config(100))
    # width 128, 1 head of 128, padded vocab 128, T = 16:
    # per block q,k,v,proj 4*128*128 + MLP 2*128*512 = 196,608; 2 blocks + head 128*128 = 409,600
    # 6 * 409,600 = 2,457,600; attention 12 * L(2) * H(1) * Dh(128) * T(16) = 49,152
    assert model.flops_per_token() == 2_457_600 + 49_152
    # torch's own FLOP counter over forward + backward of one full sequence agrees, except that
    # it also counts recomputing Q K^T in the attention backward: 2 * H * Dh * T² per layer.
    # (The plain head: the fused one makes its gradients with out= products the counter misses.)
    model.fused_head = False
    idx = torch.randint(0, 100, (1, 16))
    with FlopCounterMode(display=False) as counter:
        model(idx, idx).backward()
    recompute = 2 * 2 * 1 * 128 * 16 * 16
    assert counter.get_total_flops() == model.flops_per_token() * 16 + recompute


def test_softcap_bounds_logits() -> None:
    model = make(depth=1, softcap=5.0)
    with torch.no_grad():
        model.lm_head.weight.mul_(1000.0)
    logits = model(torch.randint(0, 100, (2, 8)))
    assert logits.dtype == torch.float32
    assert logits.abs().max() <= 5.0 and logits.abs().max() > 4.9


def test_init_weights_and_meta_build() -> None:
    factory = GPTFactory(GPTOptions(depth=2))
    config = factory.config(100)
    model = factory.build(config, device="meta")
    assert model.wte.weight.is_meta
    model.to_empty(device="cpu")
    model.init_weights()
    ref = factory.build(config)
    torch.testing.assert_close(model.cos, ref.cos)
    assert model.wte.weight.std().item() == pytest.approx(1.0, rel=0.1)
    assert (model.blocks[0].attn.c_proj.weight == 0).all()


def test_newton_schulz_is_approximately_orthogonal() -> None:
    torch.manual_seed(0)
    for shape in [(64, 128), (128, 64), (96, 160)]:  # square Gaussians are ill-conditioned
        g = torch.randn(shape)
        o = zeropower_via_newtonschulz5(g)
        assert o.shape == g.shape and o.dtype == torch.float32
        s = torch.linalg.svdvals(o)
        assert s.min() > 0.5 and s.max() < 1.3, s
        u, _, vh = torch.linalg.svd(g, full_matrices=False)
        cos = torch.nn.functional.cosine_similarity(o.flatten(), (u @ vh).flatten(), dim=0)
        assert cos > 0.95


def test_muon_decreases_loss_on_a_tiny_problem() -> None:
    torch.manual_seed(0)
    x, w_true = torch.randn(256, 32), torch.randn(32, 16)
    y = x @ w_true
    w = torch.nn.Parameter(torch.zeros(32, 16))
    opt = Muon([w], lr=0.1)
    losses = []
    for _ in range(50):
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(3))])


def test_optimizers_cover_every_parameter_once() -> None:
    model = make(depth=2)
    opts = GPTFactory().optimizers(
        model,
        OptimizerSettings(
            matrix_lr=0.02,
            embedding_lr=0.2,
            unembedding_lr=0.004,
            scalar_lr=0.5,
            weight_decay=0.0,
            world_size=1,
        ),
    )
    seen = [p for opt in opts for g in opt.param_groups for p in g["params"]]
    assert len(seen) == len({id(p) for p in seen}) == len(list(model.parameters()))
    assert all("initial_lr" in g for opt in opts for g in opt.param_groups)
    muon = next(o for o in opts if isinstance(o, Muon))
    assert all(p.ndim == 2 for g in muon.param_groups for p in g["params"])
    idx = torch.randint(0, 100, (4, 17))
    first = None
    for _ in range(10):
        loss = model.train()(idx[:, :-1], idx[:, 1:])
        first = first if first is not None else loss.item()
        loss.backward()
        for opt in opts:
            opt.step()
        model.zero_grad(set_to_none=True)
    assert loss.item() < first


def test_registered_and_options_do_not_import_torch() -> None:
    code = (
        "import sys; import nanochat.plugins.builtin as b; "
        "[s, l] = b.nanochat_register_models(); "
        "assert s.name == 'gpt' and s.options.__name__ == 'GPTOptions'; "
        "assert l.name == 'llama' and l.options.__name__ == 'LlamaOptions'; "
        "b.nanochat_register_stages(); b.nanochat_register_tokenizers(); "
        "assert 'torch' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA GeForce RTX 4090", 165e12),
        ("NVIDIA A10G", 70e12),
        ("NVIDIA L4", 121e12),
        ("Some Future GPU", None),
    ],
)
def test_peak_flops_table(name, peak) -> None:
    assert peak_flops(name) == peak


def test_cpu_matmul_peak_is_measured() -> None:
    flops = measure_cpu_matmul_flops(size=128, seconds=0.05)
    assert 1e6 < flops < 1e14


@pytest.mark.slow
def test_ddp_muon_matches_single_process(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    worker = REPO / "tests" / "dist_workers" / "muon_ddp.py"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(worker),
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2
    assert result["replica_max_diff"] == 0.0  # replicas bit-identical
    assert result["moved"] > 1e-3  # training changed the weights
    assert result["single_max_diff"] < 1e-4  # same as one process on the whole batch
    # sharded Newton-Schulz (each rank its share, then all-gathered) = every rank doing all
    assert result["steps"] == 5 and result["sharded_vs_unsharded_max_diff"] < 1e-5
    # rank 0 orthogonalised about half the matrices (shapes split 6+6, 2+1 padded, 2+1 padded)
    assert result["ns_matrices_unsharded"] == 5 * 18
    assert result["ns_matrices_sharded"] == 5 * (6 + 2 + 2)
