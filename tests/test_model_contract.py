"""The model contract: every registered model passes `nanochat.testing.model_contract`, and a
third-party model (the GRU of tests/plugins/nanochat-gru) trains through the built-in stages,
is evaluated, and is found as the newest model, with no change to any core or stage file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from nanochat.core.registry import Registry
from nanochat.plugins.gpt.options import GPTOptions
from nanochat.plugins.llama.options import LlamaOptions
from nanochat.testing import model_contract

SMALL_RUN = [
    "-o",
    "tokenizer.max_chars=20000",
    "-o",
    "tokenizer.eval_chars=2000",
    "-o",
    "model.sequence_len=64",
    "-o",
    "pretrain.max_steps=6",
    "-o",
    "pretrain.device_batch_size=4",
    "-o",
    "pretrain.eval_every=3",
    "-o",
    "pretrain.eval_tokens=512",
    "-o",
    "pretrain.checkpoint_every=3",
    "-o",
    "pretrain.sample_tokens=4",
    "-o",
    "sft.max_steps=3",
    "-o",
    "sft.device_batch_size=2",
    "-o",
    "sft.eval_conversations=4",
    "-o",
    "sft.overflow=truncate",
    "-o",
    "sft.sample_tokens=4",
]


@pytest.fixture
def registry_with_gru(plugin_sites, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.syspath_prepend(str(plugin_sites["gru"]))
    return Registry.load()


def test_every_registered_model_passes_the_contract(registry_with_gru: Registry) -> None:
    models = registry_with_gru.components("model")
    names = {m.qualified_name for m in models}
    assert {"nanochat/gpt", "nanochat-gru/gru"} <= names, names
    for resolved in models:
        factory = registry_with_gru.create("model", resolved.qualified_name)
        facts = model_contract.check_model_factory(factory)
        assert facts["params"] > 0, resolved.qualified_name


# Small shapes of every built-in model, with the variants their options allow (GQA, tied head).
BUILTIN_MODELS = {
    "gpt": GPTOptions(depth=2, aspect_ratio=32, head_dim=16, sequence_len=32),
    "gpt-gqa": GPTOptions(depth=2, aspect_ratio=32, head_dim=16, n_kv_head=2, sequence_len=32),
    "llama": LlamaOptions(depth=2, n_embd=64, head_dim=16, sequence_len=32),
    "llama-gqa-tied": LlamaOptions(
        depth=2, n_embd=64, head_dim=16, n_kv_head=2, sequence_len=32, tie_embeddings=True
    ),
    "llama-rope-base-adamw": LlamaOptions(
        depth=1,
        n_embd=64,
        head_dim=32,
        sequence_len=32,
        rope_theta=100000.0,
        vocab_multiple=1,
        optimizer="adamw",
    ),
}


@pytest.mark.parametrize("variant", sorted(BUILTIN_MODELS))
def test_builtin_model_contract(variant: str, tmp_path: Path) -> None:
    """Build, forward, cached generation equals uncached (logits and greedy tokens), parameter
    groups cover every parameter once, and a checkpoint save/load round trip, for each model."""
    name = variant.split("-")[0]
    factory = Registry.load().create("model", name, BUILTIN_MODELS[variant])
    facts = model_contract.check_model_factory(factory, tmp_path)
    assert facts["params"] > 0 and facts["max_context"] >= facts["sequence_len"]
    assert (tmp_path / "step_00000003" / "model.safetensors").is_file()


@pytest.mark.parametrize("name", ["gpt", "llama"])
def test_the_contract_catches_a_missing_group(name: str) -> None:
    """A factory whose optimizers leave a parameter out fails the contract."""
    factory = Registry.load().create("model", name)
    model = model_contract.build_small(factory)
    plain = factory.optimizers

    def drop_one(model, settings):  # the last optimizer loses its last parameter
        optimizers = plain(model, settings)
        optimizers[-1].param_groups[-1]["params"].pop()
        return optimizers

    factory.optimizers = drop_one
    with pytest.raises(AssertionError, match="no group"):
        model_contract.check_optimizers(factory, model)


def test_the_contract_catches_a_broken_cache(registry_with_gru: Registry) -> None:
    """A model whose cached pass ignores each row's position fails the contract."""
    factory = registry_with_gru.create("model", "gpt")
    model = model_contract.build_small(factory)
    model.eval()
    plain_cached = model.forward_cached

    def forget_positions(idx, cache):  # every row restarts at 0: wrong for a second chunk
        cache.reset()
        return plain_cached(idx, cache)

    model.forward_cached = forget_positions
    with pytest.raises(AssertionError):
        model_contract.check_generation_cache(model)


def read(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow
def test_third_party_model_trains_evaluates_and_is_newest(home: Path, plugin_sites) -> None:
    sites = [plugin_sites["gru"]]
    args = ["run", "tokenizer", "pretrain", "sft", "--run", "g", "--model", "gru"]
    trained = run_cli([*args, "--tokenizer", "bytes", *SMALL_RUN], home, sites)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_dir = home / "runs" / "g"
    record = read(run_dir / "pipeline.json")
    assert record["model"]["qualified_name"] == "nanochat-gru/gru"
    assert record["tokenizer"]["qualified_name"] == "nanochat-gru/bytes"
    sft_meta = read(sorted((run_dir / "sft" / "checkpoints").glob("step_*"))[-1] / "meta.json")
    assert sft_meta["model"]["qualified_name"] == "nanochat-gru/gru"
    assert sft_meta["model"]["version"] == "0.2.0"
    assert sft_meta["tokenizer"]["qualified_name"] == "nanochat-gru/bytes"

    # eval finds the recorded tokenizer and model without --tokenizer / --model
    evaluated = run_cli(["eval", "bpb", "--run", "g", "-o", "eval-bpb.tokens=512"], home, sites)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    bpb = json.loads(evaluated.stdout)["bpb"]  # stdout is the JSON result alone
    assert 0 < bpb < 12

    # a third-party stage producing a model becomes the newest model
    polished = run_cli(
        ["run", "polish", "eval:bpb", "--run", "g", "-o", "eval-bpb.tokens=512"], home, sites
    )
    assert polished.returncode == 0, polished.stderr[-3000:]
    assert read(run_dir / "polish" / "done.json")["result"]["source"].endswith(
        str(Path("sft") / "checkpoints" / sft_meta_step(run_dir))
    )
    scored = read(run_dir / "eval-bpb" / "done.json")["checkpoint"]
    assert Path(scored).parent.parent.name == "polish"

    # an explicit --model that does not match the checkpoint is a one-line error naming both
    wrong = run_cli(["eval", "bpb", "--run", "g", "--model", "gpt"], home, sites)
    assert wrong.returncode == 1
    assert "--model nanochat/gpt does not match" in wrong.stderr
    assert "nanochat-gru/gru" in wrong.stderr and "Traceback" not in wrong.stderr
    wrong_tok = run_cli(["eval", "bpb", "--run", "g", "--tokenizer", "rustbpe"], home, sites)
    assert wrong_tok.returncode == 1
    assert "--tokenizer nanochat/rustbpe does not match" in wrong_tok.stderr


def sft_meta_step(run_dir: Path) -> str:
    return sorted((run_dir / "sft" / "checkpoints").glob("step_*"))[-1].name
