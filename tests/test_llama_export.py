"""`nanochat export`: a small llama run to a Hugging Face folder (transformers loads it, same
logits) and to GGUF (the `gguf` reader gives back the same tensors); a gpt run to its documented
safetensors layout; GGUF tensor types and the Q/K row permutation; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from safetensors.torch import load_file

from nanochat.core.checkpoint import CheckpointManager
from nanochat.plugins.llama.factory import LlamaFactory
from nanochat.plugins.llama.gguf_io import interleave_rows, split_rows
from nanochat.plugins.llama.importer import read_pretrained
from nanochat.plugins.llama.options import LlamaOptions

SMALL = [
    *("-o", "tokenizer.vocab_size=512"),
    *("-o", "tokenizer.max_chars=200000"),
    *("-o", "tokenizer.eval_chars=2000"),
    *("-o", "model.sequence_len=64"),
    *("-o", "pretrain.max_steps=4"),
    *("-o", "pretrain.device_batch_size=4"),
    *("-o", "pretrain.eval_every=1000"),
    *("-o", "pretrain.eval_tokens=256"),
    *("-o", "pretrain.sample_tokens=2"),
]
LLAMA = [
    *("-o", "model.depth=2"),
    *("-o", "model.n_embd=64"),
    *("-o", "model.head_dim=16"),
    *("-o", "model.n_kv_head=2"),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with a small llama run ``l`` (hf-bpe tokenizer) and a small gpt run ``g``."""
    home = tmp_path_factory.mktemp("export-home")
    llama = ["run", "tokenizer", "pretrain", "--run", "l", "--model", "llama"]
    done = run_cli([*llama, "--tokenizer", "hf-bpe", *SMALL, *LLAMA], home)
    assert done.returncode == 0, done.stderr[-3000:]
    gpt = ["run", "tokenizer", "pretrain", "--run", "g", "--model", "gpt", "-o", "model.depth=2"]
    done = run_cli([*gpt, *SMALL], home)
    assert done.returncode == 0, done.stderr[-3000:]
    return home


def newest(home: Path, run: str) -> tuple[dict, dict[str, torch.Tensor]]:
    checkpoint = CheckpointManager(home / "runs" / run / "pretrain" / "checkpoints").load()
    return checkpoint.meta, checkpoint.model_state()


def llama_from(meta: dict, state: dict[str, torch.Tensor]):  # type: ignore[no-untyped-def]
    model = LlamaFactory().build(meta["model_config"])
    model.load_state_dict(state)
    return model.eval()


def test_llama_run_exports_to_a_folder_transformers_loads(runs: Path, tmp_path: Path) -> None:
    """Must-show 4: LlamaForCausalLM loads the HF export and gives nanochat's logits (1e-4)."""
    from transformers import LlamaForCausalLM

    out = tmp_path / "hf"
    done = run_cli(["export", "--run", "l", "--format", "hf", str(out)], runs)
    assert done.returncode == 0, done.stderr[-2000:]
    assert str(out / "model.safetensors") in done.stdout
    model = llama_from(*newest(runs, "l"))
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (2, 24), generator=torch.Generator().manual_seed(0))
    hf = LlamaForCausalLM.from_pretrained(str(out)).float().eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), rtol=1e-4, atol=1e-4)
    assert hf.config.num_key_value_heads == 2 and hf.config.vocab_size == vocab
    assert (out / "nanochat_tokenizer").is_dir()  # hf-bpe has no HF form with its specials


def test_llama_run_exports_to_gguf_that_reads_back(runs: Path, tmp_path: Path) -> None:
    """Must-show 4: `gguf` reads the export back to the same tensors; re-import is exact."""
    import gguf

    out = tmp_path / "l.gguf"
    done = run_cli(["export", "--run", "l", "--format", "gguf", str(out)], runs)
    assert done.returncode == 0, done.stderr[-2000:]
    meta, state = newest(runs, "l")
    config = meta["model_config"]
    reader = gguf.GGUFReader(str(out))
    tensors = {t.name: t for t in reader.tensors}
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["llama.attention.head_count_kv"].contents() == config["n_kv_head"]
    vocab = config["vocab_size"]
    expected_names = {"token_embd.weight", "output.weight", "output_norm.weight"}
    assert expected_names <= set(tensors)
    for name, ours in state.items():
        if name.startswith("layers."):
            _, i, rest = name.split(".", 2)
            short = {
                "input_layernorm.weight": "attn_norm",
                "self_attn.q_proj.weight": "attn_q",
                "self_attn.k_proj.weight": "attn_k",
                "self_attn.v_proj.weight": "attn_v",
                "self_attn.o_proj.weight": "attn_output",
                "post_attention_layernorm.weight": "ffn_norm",
                "mlp.gate_proj.weight": "ffn_gate",
                "mlp.up_proj.weight": "ffn_up",
                "mlp.down_proj.weight": "ffn_down",
            }[rest]
            gname = f"blk.{i}.{short}.weight"
        else:
            gname = {
                "embed_tokens.weight": "token_embd.weight",
                "lm_head.weight": "output.weight",
                "norm.weight": "output_norm.weight",
            }[name]
        t = tensors[gname]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        values = np.asarray(t.data).reshape(tuple(reversed(list(t.shape))))
        if gname.endswith("attn_q.weight"):
            values = split_rows(values, config["n_head"])
        if gname.endswith("attn_k.weight"):
            values = split_rows(values, config["n_kv_head"])
        want = ours.numpy()[:vocab] if "token_embd" in gname or "output.w" in gname else ours
        assert np.array_equal(values, np.asarray(want)), gname
    again = read_pretrained(out)  # the hf-bpe vocabulary came along
    model = llama_from(meta, state)
    from nanochat.core.registry import Registry
    from nanochat.plugins.tokenizers.options import TokenizerOptions

    trained = Registry.load().create("tokenizer", "hf-bpe", TokenizerOptions())
    trained = trained.load(runs / "runs" / "l" / "tokenizer")
    text = "Hello world, 12345 tokens; ünïcödé 🙂\n\n  code: x = f(y)"
    assert again.tokenizer.encode(text) == trained.encode(text)
    assert (
        again.tokenizer.special_tokens["<|assistant_end|>"]
        == trained.special_tokens["<|assistant_end|>"]
    )
    assert again.tokenizer.decode(trained.encode(text)) == text
    ids = torch.randint(0, vocab, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(again.model.eval()(ids), model(ids))


def test_gpt_run_exports_its_documented_layout(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "gpt"
    done = run_cli(["export", "--run", "g", "--format", "hf", str(out)], runs)
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "nanochat-gpt"
    meta, state = newest(runs, "g")
    assert config["architecture"]["n_layer"] == meta["model_config"]["n_layer"] == 2
    exported = load_file(str(out / "model.safetensors"))
    vocab = meta["model_config"]["vocab_size"]
    assert set(exported) == set(state)
    for name, tensor in state.items():
        cut = tensor[:vocab] if name in ("wte.weight", "lm_head.weight") else tensor
        assert torch.equal(exported[name], cut), name
    assert "wte.weight" in (out / "README.md").read_text()
    assert (out / "tokenizer" / "tokenizer.json.meta").is_file()
    wrong = run_cli(["export", "--run", "g", "--format", "gguf", str(tmp_path / "x")], runs)
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
    assert "no export format 'gguf'" in wrong.stderr and "hf" in wrong.stderr


def test_bad_paths_are_one_line_errors(tmp_path: Path) -> None:
    missing = run_cli(["import", str(tmp_path / "nope.gguf"), "--run", "x"], tmp_path)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all")
    bad = run_cli(["import", str(junk), "--run", "x"], tmp_path)
    assert bad.returncode != 0 and "neither a GGUF file" in bad.stderr
    folder = tmp_path / "folder"
    folder.mkdir()
    empty = run_cli(["import", str(folder), "--run", "y"], tmp_path)
    assert empty.returncode != 0 and "config.json is missing" in empty.stderr
    for result in (missing, bad, empty):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 3
    no_run = run_cli(["export", "--run", "ghost", "--format", "hf", str(tmp_path / "o")], tmp_path)
    assert no_run.returncode != 0 and "does not exist" in no_run.stderr


def test_qk_permutation_round_trips() -> None:
    """GGUF's interleaved rotary rows: pairs (i, i + d/2) of each head become (2i, 2i + 1)."""
    weight = np.arange(2 * 8 * 3).reshape(16, 3)  # 2 heads of 8 rows
    moved = interleave_rows(weight, 2)
    assert moved[:, 0].tolist()[:8] == [0, 12, 3, 15, 6, 18, 9, 21]
    assert np.array_equal(split_rows(moved, 2), weight)


@pytest.mark.parametrize("kind", ["F32", "F16", "Q8_0", "Q4_0", "Q4_1"])
def test_gguf_tensor_types_are_dequantised(kind: str, tmp_path: Path) -> None:
    """A GGUF whose matrices are stored as ``kind`` imports to the values `gguf` dequantises,
    close to the original weights."""
    import gguf

    from nanochat.plugins.llama.gguf_io import gguf_tensors

    options = LlamaOptions(depth=1, n_embd=64, head_dim=32, sequence_len=32, vocab_multiple=1)
    factory = LlamaFactory(options)
    torch.manual_seed(0)
    model = factory.build(factory.config(96)).eval()
    qtype = gguf.GGMLQuantizationType[kind]
    path = tmp_path / f"m-{kind}.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    c = model.config
    writer.add_block_count(c.n_layer)
    writer.add_context_length(c.max_context)
    writer.add_embedding_length(c.n_embd)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.n_head)
    writer.add_head_count_kv(c.n_kv_head)
    writer.add_rope_freq_base(c.rope_theta)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_tokenizer_model("gpt2")
    tokens = [chr(ord("a") + i % 26) * (1 + i // 26) for i in range(96)]
    writer.add_token_list(tokens)
    writer.add_token_types([1] * 96)
    writer.add_token_merges([])
    stored = {}
    for name, values in gguf_tensors(model).items():
        if values.ndim == 2 and kind != "F32":
            data = gguf.quants.quantize(values.astype(np.float32), qtype)
            writer.add_tensor(name, data, raw_dtype=qtype)
            stored[name] = gguf.quants.dequantize(data, qtype).reshape(values.shape)
        else:
            writer.add_tensor(name, values)
            stored[name] = values
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    imported = read_pretrained(path, tokenizer=False).model
    q = split_rows(stored["blk.0.attn_q.weight"], c.n_head)
    got = imported.layers[0].self_attn.q_proj.weight.detach().numpy()
    assert np.array_equal(got, q.astype(np.float32))
    original = model.layers[0].self_attn.q_proj.weight.detach().numpy()
    tolerance = {"F32": 0, "F16": 1e-3, "Q8_0": 1e-2, "Q4_0": 0.2, "Q4_1": 0.2}[kind]
    assert np.abs(got - original).max() <= tolerance * np.abs(original).max() + 1e-7
