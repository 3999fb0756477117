"""The Rust CPU kernels (``nanochat-kernels``) behind the gpt and llama decode steps: the
single-token attention equals torch's SDPA for every kind of span (shared, per row, sliding
window), grouped heads and strided cache views, on one thread and on torch's team; the panel
product equals a plain product; bad buffers are refused with a clear error; the engine gives the
same greedy tokens with the kernels and without."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nanochat_kernels import PANEL, decode_attention, panel_matmul

from benchmarks.inference import IdsTokenizer
from nanochat.core.engine import Engine, Request, SamplingParams
from nanochat.plugins.gpt import cpu_attention, cpu_kernels
from nanochat.plugins.gpt.factory import GPTFactory
from nanochat.plugins.gpt.options import GPTOptions


def test_the_kernel_is_installed() -> None:
    """CI must exercise the kernel, not silently fall back to SDPA."""
    assert cpu_kernels.available()


def sdpa_reference(q, k, v, spans) -> torch.Tensor:
    """SDPA with a boolean mask of each row's span (grouped heads repeated)."""
    groups = q.size(1) // k.size(1)
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    keys = torch.arange(k.size(2))
    mask = torch.stack([(keys >= lo) & (keys < hi) for lo, hi in spans])[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


CASES = {
    "shared": ([(0, 40)] * 4, 4, 4),
    "per-row": ([(0, 1), (0, 17), (0, 40), (0, 33)], 4, 4),
    "window": ([(30, 40), (0, 5), (12, 19), (36, 40)], 4, 4),
    "grouped": ([(0, 40), (0, 9), (3, 27), (0, 2)], 6, 2),
    "one-kv-head": ([(0, 40), (0, 9), (3, 27), (0, 2)], 4, 1),
}


@pytest.mark.parametrize("threads", ["one", "team"])
@pytest.mark.parametrize("dim", [64, 20])
@pytest.mark.parametrize("case", list(CASES))
def test_equals_sdpa(case: str, dim: int, threads: str, monkeypatch) -> None:
    spans, heads, kv_heads = CASES[case]
    monkeypatch.setattr(cpu_attention, "PARALLEL_MIN_FLOATS", 10**12 if threads == "one" else 0)
    torch.manual_seed(0)
    rows = len(spans)
    # a cache-like layout: every row's keys are a prefix of a longer buffer
    k_store, v_store = torch.randn(2, rows, kv_heads, 64, dim).unbind(0)
    k, v = k_store[:, :, :40], v_store[:, :, :40]
    q = torch.randn(rows, heads + 3, 1, dim)[:, 3:]  # a strided view, like the model's
    with torch.no_grad():
        got = cpu_attention.attend_one_token(q, k, v, spans)
    want = sdpa_reference(q, k, v, spans)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)


def test_rejects_buffers_that_do_not_fit() -> None:
    q = np.zeros((2, 2, 8), np.float32)
    k = np.zeros((2, 2, 5, 8), np.float32)
    out = np.zeros((2, 2, 8), np.float32)
    with pytest.raises(ValueError, match="row 1"):
        decode_attention(q, k, k, out, [(0, 5), (3, 3)], 1.0)
    with pytest.raises(ValueError, match="row 0"):
        decode_attention(q, k, k, out, [(0, 6), (0, 1)], 1.0)
    with pytest.raises(ValueError, match="3 spans for 2 rows"):
        decode_attention(q, k, k, out, [(0, 5), (0, 1), (0, 2)], 1.0)
    with pytest.raises(ValueError, match="do not match"):
        decode_attention(q, k[:1], k[:1], out, [(0, 5), (0, 1)], 1.0)
    with pytest.raises(ValueError, match="dimensions"):
        decode_attention(q[0], k, k, out, [(0, 5), (0, 1)], 1.0)
    with pytest.raises(TypeError, match="float32"):
        decode_attention(q.astype(np.float64), k, k, out, [(0, 5), (0, 1)], 1.0)
    frozen = out.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        decode_attention(q, k, k, frozen, [(0, 5), (0, 1)], 1.0)
    with pytest.raises(ValueError, match="overlaps"):
        decode_attention(q, k, k, q, [(0, 5), (0, 1)], 1.0)
    with pytest.raises(ValueError, match="contiguous"):
        decode_attention(q, k[..., ::2], k[..., ::2], out[..., :4], [(0, 5), (0, 1)], 1.0)
    with pytest.raises(ValueError, match="evenly"):
        decode_attention(
            np.zeros((2, 3, 8), np.float32),
            k,
            k,
            np.zeros((2, 3, 8), np.float32),
            [(0, 5), (0, 1)],
            1.0,
        )


@pytest.mark.parametrize("threads", [1, 2, 5])
@pytest.mark.parametrize("rows", [1, 3, 8, 16])
def test_panel_product_equals_a_plain_product(rows: int, threads: int) -> None:
    torch.manual_seed(rows)
    inner, cols = 40, 6 * PANEL
    x = torch.randn(rows, inner + 8)[:, 3 : 3 + inner]  # rows 48 floats apart
    w = torch.randn(cols, inner)
    panels = w.view(cols // PANEL, PANEL, inner).transpose(1, 2).contiguous()
    out = torch.full((rows, cols), float("nan"))
    panel_matmul(x.numpy(), panels.numpy(), out.numpy(), threads)
    torch.testing.assert_close(out, x @ w.T, atol=1e-5, rtol=1e-5)


def test_panel_product_rejects_buffers_that_do_not_fit() -> None:
    x = np.zeros((2, 8), np.float32)
    panels = np.zeros((3, 8, PANEL), np.float32)
    out = np.zeros((2, 3 * PANEL), np.float32)
    with pytest.raises(ValueError, match="panels must be"):
        panel_matmul(x, np.zeros((3, 9, PANEL), np.float32), out)
    with pytest.raises(ValueError, match="panels must be"):
        panel_matmul(x, np.zeros((3, 8, 8), np.float32), out)
    with pytest.raises(ValueError, match=r"out must be a writable C-contiguous \(2, 48\)"):
        panel_matmul(x, panels, out[:, :32])
    with pytest.raises(ValueError, match="out overlaps"):
        panel_matmul(x, panels, panels.reshape(-1)[: 2 * 3 * PANEL].reshape(2, 3 * PANEL))
    with pytest.raises(TypeError, match="float32"):
        panel_matmul(x.astype(np.float64), panels, out)
    with pytest.raises(ValueError, match="dimensions"):
        panel_matmul(x[0], panels, out)


def greedy_tokens(model, prompts: list[list[int]], slots: int) -> list[list[int]]:
    engine = Engine(model, IdsTokenizer(512), slots=slots)
    params = SamplingParams(max_tokens=24, stop_tokens=())
    results = engine.complete([Request(p, params) for p in prompts])
    return [r[0].tokens for r in results]


@pytest.mark.parametrize("options", [{}, {"window_pattern": "SL", "short_window": 6}])
def test_engine_gives_the_same_tokens_with_and_without_the_kernel(options, monkeypatch) -> None:
    """Greedy decoding of prompts of different lengths, admitted into 3 slots as rows free up
    (rows at different positions), with the kernel and with SDPA."""
    torch.manual_seed(0)
    factory = GPTFactory(
        GPTOptions(depth=2, aspect_ratio=32, head_dim=16, sequence_len=64, **options)
    )
    model = factory.build(factory.config(512))
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0.0, 0.1)
    model.eval()
    prompts = [torch.randint(0, 512, (n,)).tolist() for n in (3, 11, 7, 20, 1)]
    with_kernel = greedy_tokens(model, prompts, slots=3)
    monkeypatch.setattr(cpu_kernels, "ENABLED", False)
    assert greedy_tokens(model, prompts, slots=3) == with_kernel
