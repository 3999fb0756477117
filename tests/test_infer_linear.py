"""The inference weight layouts of the gpt model: stacked, panel (the Rust kernel) and split
(torch only) products equal plain ones, and follow weight updates."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nanochat.plugins.gpt import cpu_kernels
from nanochat.plugins.gpt.factory import GPTFactory
from nanochat.plugins.gpt.infer_linear import SPLIT_MAX_ROWS, InferenceWeights, slice_count
from nanochat.plugins.gpt.options import GPTOptions


@pytest.fixture
def two_threads():
    """Run with two torch threads (the split layout needs several), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def torch_only(monkeypatch):
    """Without the compiled kernels: the split layout (torch's batched product)."""
    monkeypatch.setattr(cpu_kernels, "ENABLED", False)


@pytest.mark.parametrize("kernels", [True, False], ids=["kernels", "torch-only"])
@pytest.mark.parametrize("shape", [(1, 1, 48), (8, 1, 48), (3, 48), (2, 5, 48), (40, 48)])
@pytest.mark.parametrize("threads", [1, 2])
def test_products_equal_f_linear(shape, threads, kernels, monkeypatch) -> None:
    """Decode-sized inputs (panels, or the split layout with 2 threads) and larger ones
    (plain) alike."""
    monkeypatch.setattr(cpu_kernels, "ENABLED", kernels)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        weights = InferenceWeights()
        w1, w2 = torch.randn(64, 48), torch.randn(32, 48)
        x = torch.randn(shape)
        got = weights.linear(x, w1, w2)
        torch.testing.assert_close(got, F.linear(x, torch.cat([w1, w2])), atol=1e-5, rtol=1e-5)
        assert got.shape == (*shape[:-1], 96)
        torch.testing.assert_close(weights.linear(x, w2), F.linear(x, w2), atol=1e-5, rtol=1e-5)
    finally:
        torch.set_num_threads(before)


def test_panel_layout_is_used_and_follows_updates(two_threads) -> None:
    """With the kernels, decode-sized products go through one panel copy per weight group,
    made once and rebuilt after an in-place update; a width that is not whole panels, too many
    rows or another dtype take the other paths."""
    assert cpu_kernels.available()
    weights = InferenceWeights()
    w = torch.randn(64, 48)
    x = torch.randn(SPLIT_MAX_ROWS, 48)
    torch.testing.assert_close(weights.linear(x, w), F.linear(x, w), atol=1e-5, rtol=1e-5)
    (panels,) = [held[1] for held in weights._panels.values()]
    assert panels.data_ptr() == weights._panels[id(w),][2].ctypes.data  # one memory
    assert panels.shape == (4, 48, 16)
    torch.testing.assert_close(panels[1], w[16:32].T)
    weights.linear(x, w)
    assert [held[1] for held in weights._panels.values()][0] is panels  # reused
    w.mul_(2.0)  # an optimizer step
    torch.testing.assert_close(weights.linear(x, w), F.linear(x, w), atol=1e-5, rtol=1e-5)
    odd = torch.randn(40, 48)  # 40 columns: not whole panels
    torch.testing.assert_close(weights.linear(x, odd), F.linear(x, odd), atol=1e-5, rtol=1e-5)
    wide = torch.randn(SPLIT_MAX_ROWS + 1, 48)
    torch.testing.assert_close(weights.linear(wide, w), F.linear(wide, w), atol=1e-5, rtol=1e-5)
    assert weights.linear(x.to(torch.bfloat16), w.to(torch.bfloat16)).dtype == torch.bfloat16
    strided = torch.randn(3, 96)[:, ::2]  # rows whose floats are not contiguous
    torch.testing.assert_close(
        weights.linear(strided, w), F.linear(strided, w), atol=1e-5, rtol=1e-5
    )


def test_split_layout_is_used_and_follows_updates(two_threads, torch_only) -> None:
    """The split copy is made once, rebuilt after an in-place update or a dtype move."""
    weights = InferenceWeights()
    w = torch.randn(64, 48)
    x = torch.randn(SPLIT_MAX_ROWS, 48)
    weights.linear(x, w)
    (split,) = [held[2] for held in weights._split.values()]
    assert split.shape == (2, 48, 32)
    weights.linear(x, w)
    assert [held[2] for held in weights._split.values()][0] is split  # reused
    w.mul_(2.0)  # an optimizer step
    torch.testing.assert_close(weights.linear(x, w), F.linear(x, w), atol=1e-5, rtol=1e-5)
    wide = torch.randn(SPLIT_MAX_ROWS + 1, 48)  # too many rows: plain product
    torch.testing.assert_close(weights.linear(wide, w), F.linear(wide, w), atol=1e-5, rtol=1e-5)
    half = w.to(torch.bfloat16)  # not float32: plain product in its dtype
    assert weights.linear(x.to(torch.bfloat16), half).dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("out", "threads", "parts"),
    [(4096, 2, 16), (576, 2, 16), (192, 2, 16), (64, 2, 2), (96, 2, 2), (4096, 4, 32)],
)
def test_slices_per_thread_where_the_width_allows(out, threads, parts) -> None:
    """Eight slices per thread when each keeps at least 8 columns, else one per thread."""
    assert slice_count(out, threads) == parts


@pytest.mark.parametrize("rows", [1, 8])
def test_narrow_slices_give_the_plain_product(two_threads, torch_only, rows) -> None:
    """A wide matrix is multiplied in 16 narrow slices (2 threads), in the right column order."""
    torch.manual_seed(0)
    weights = InferenceWeights()
    w = torch.randn(256, 48)
    x = torch.randn(rows, 1, 48)
    got = weights.linear(x, w)
    (split,) = [held[2] for held in weights._split.values()]
    assert split.shape == (16, 48, 16)
    torch.testing.assert_close(got, F.linear(x, w), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernels", [True, False], ids=["kernels", "torch-only"])
def test_model_decode_follows_weight_updates(two_threads, kernels, monkeypatch) -> None:
    """Decode steps (panel or split products) equal the training path, also after the weights
    change."""
    monkeypatch.setattr(cpu_kernels, "ENABLED", kernels)
    factory = GPTFactory(GPTOptions(depth=2, head_dim=32, sequence_len=32))
    torch.manual_seed(0)
    model = factory.build(factory.config(100)).eval()
    idx = torch.randint(0, 100, (4, 6))
    for _ in range(2):
        cache = model.new_cache(4, 16)
        with torch.no_grad():
            steps = [model.forward_cached(idx[:, t : t + 1], cache) for t in range(6)]
        full = model(idx).detach()
        torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.1)
