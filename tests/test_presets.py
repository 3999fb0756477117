"""The GPU presets imply nanochat's recipe shapes: parameter counts and token budgets."""

from __future__ import annotations

import math

import pytest
import torch
from nanochat_stages.text_recipe import plan_steps

from nanochat.core.plan import plan_run
from nanochat.core.registry import Registry

GPT = {"model": "gpt", "tokenizer": "rustbpe"}


def gpt_params(depth: int, vocab: int) -> int:
    """Embedding + head (vocab x width each) and 12 width² per block (attention 4, MLP 8)."""
    width = 64 * depth
    return 2 * vocab * width + depth * 12 * width * width


@pytest.mark.parametrize(
    ("preset", "depth", "params_m"), [("d12", 12, 185.6), ("d20", 20, 561.0), ("d26", 26, 1082.0)]
)
def test_gpu_preset_shape_and_token_budget(preset: str, depth: int, params_m: float) -> None:
    registry = Registry.load()
    stages = ["download-fineweb", "tokenizer", "pretrain"]
    plan = plan_run(registry, stages, "presets", preset=preset, defaults=GPT)
    vocab = plan.stages[1].options.vocab_size
    assert vocab == 65536
    factory = registry.create("model", "gpt", plan.model_options)
    config = factory.config(vocab)
    with torch.device("meta"):
        model = factory.build(config, torch.device("meta"))
    params = sum(p.numel() for p in model.parameters())
    assert params == gpt_params(depth, vocab)
    assert params / 1e6 == pytest.approx(params_m, rel=2e-3)
    assert model.sequence_len == 2048
    pretrain = plan.stages[2].options
    assert pretrain.dataset == "fineweb" and pretrain.total_batch_tokens == 524288
    steps = plan_steps(pretrain, params, pretrain.total_batch_tokens)
    assert steps == math.ceil(20 * params / 524288)  # 20 tokens per parameter (Chinchilla)
    tokens = steps * pretrain.total_batch_tokens
    assert 20 * params <= tokens < 20 * params + 524288
    # the speedrun pipeline of a GPU preset starts by downloading enough FineWeb: a shard holds
    # ~250M characters, ~52M tokens at the 65k tokenizer's ~4.8 characters per token
    assert registry.preset(preset).stages[:3] == ("download-fineweb", "tokenizer", "pretrain")
    assert plan.stages[0].options.num_shards * 52e6 > tokens
