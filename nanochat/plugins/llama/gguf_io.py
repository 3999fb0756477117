"""GGUF files (llama.cpp's format, read and written with the `gguf` package) to and from the
``llama`` model and the ``pretrained`` tokenizer.

Tensors are dequantised to fp32 (F32, F16, BF16, Q4_0, Q4_1, Q8_0 and the other types the
`gguf` package dequantises). GGUF converters permute the rows of the query and key projections
so that rotary pairs are adjacent (``(2i, 2i+1)``, Meta's interleaved layout); this model pairs
``i`` with ``i + head_dim/2`` (Hugging Face's layout), so the reader undoes the permutation and
the writer applies it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nanochat.core.errors import UsageError
from nanochat.plugins.llama.model import Llama

logger = logging.getLogger(__name__)

# GGUF tensor names by this model's names; {i} is the block index.
BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
TOP_NAMES = {"token_embd": "embed_tokens", "output_norm": "norm", "output": "lm_head"}
NANOCHAT_KEYS = ("nanochat.sequence_len", "nanochat.vocab_multiple")
PRE_PATTERN_KEY = "nanochat.pre_pattern"  # the split regex of pre-tokenizer "nanochat"


def interleave_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Rows of a Q or K projection from the half-split rotary layout to the interleaved one
    (what GGUF converters write): per head, row ``j`` of the first half and row ``j`` of the
    second half become rows ``2j`` and ``2j + 1``."""
    out = weight.shape[0]
    head = out // n_heads
    return weight.reshape(n_heads, 2, head // 2, -1).swapaxes(1, 2).reshape(weight.shape)


def split_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse of :func:`interleave_rows` (GGUF's layout back to the half-split one)."""
    out = weight.shape[0]
    head = out // n_heads
    return weight.reshape(n_heads, head // 2, 2, -1).swapaxes(1, 2).reshape(weight.shape)


@dataclass
class GGUFContents:
    """What a GGUF file holds, converted: the model config, its tensors, the tokenizer fields."""

    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    tensor_types: dict[str, str]
    fields: dict[str, Any]


def _field_value(field: Any) -> Any:
    """The value of a GGUF reader field: a scalar, a string, or a list of either."""
    import gguf

    if hasattr(field, "contents"):
        return field.contents()
    types = list(field.types)
    if types and types[0] == gguf.GGUFValueType.ARRAY:
        if len(types) > 1 and types[1] == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if types and types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    return field.parts[field.data[0]].tolist()[0]


def _dequantize(tensor: Any) -> np.ndarray:
    """The tensor's values as fp32, shaped like torch (GGUF lists dimensions innermost first)."""
    import gguf

    shape = tuple(int(d) for d in reversed(list(tensor.shape)))
    kind = gguf.GGMLQuantizationType(int(tensor.tensor_type))
    if kind in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        values = np.asarray(tensor.data, dtype=np.float32)
    else:
        try:
            values = gguf.quants.dequantize(np.asarray(tensor.data), kind)
        except NotImplementedError:
            raise UsageError(
                f"tensor {tensor.name} is {kind.name}, which gguf cannot dequantise"
            ) from None
    return np.array(values.reshape(shape), dtype=np.float32, copy=True)  # writable, owned


def read_gguf(path: Path) -> GGUFContents:
    """Read a Llama-architecture GGUF file into a ``llama`` config and state dict.

    Raises:
        UsageError: not a GGUF file, another architecture, or unsupported features.
    """
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError, KeyError) as exc:
        raise UsageError(f"{path} is not a readable GGUF file: {exc}") from None
    fields = {
        name: _field_value(field)
        for name, field in reader.fields.items()
        if not name.startswith("GGUF.")
    }
    arch = fields.get("general.architecture")
    if arch != "llama":
        raise UsageError(f"{path} holds a {arch!r} model; nanochat imports 'llama' GGUF files")
    if f"{arch}.rope.scaling.type" in fields or any(
        t.name == "rope_freqs.weight" for t in reader.tensors
    ):
        raise UsageError(f"{path} uses rotary scaling, which the llama plugin does not implement")

    def meta(key: str, default: Any = None) -> Any:
        value = fields.get(f"{arch}.{key}", default)
        if value is None:
            raise UsageError(f"{path} lacks the GGUF key {arch}.{key}")
        return value

    n_embd = int(meta("embedding_length"))
    n_head = int(meta("attention.head_count"))
    n_kv_head = int(meta("attention.head_count_kv", n_head))
    head_dim = int(meta("rope.dimension_count", n_embd // n_head))
    state: dict[str, torch.Tensor] = {}
    types: dict[str, str] = {}
    for tensor in reader.tensors:
        ours = _our_name(tensor.name)
        if ours is None:
            logger.warning("ignoring GGUF tensor %s", tensor.name)
            continue
        values = _dequantize(tensor)
        if ours.endswith("q_proj.weight"):
            values = split_rows(values, n_head)
        elif ours.endswith("k_proj.weight"):
            values = split_rows(values, n_kv_head)
        state[ours] = torch.from_numpy(values)
        types[ours] = gguf.GGMLQuantizationType(int(tensor.tensor_type)).name
    if "embed_tokens.weight" not in state:
        raise UsageError(f"{path} has no token_embd.weight tensor")
    vocab_size = int(state["embed_tokens.weight"].shape[0])
    config = {
        "vocab_size": vocab_size,
        "n_layer": int(meta("block_count")),
        "n_head": n_head,
        "n_kv_head": n_kv_head,
        "n_embd": n_embd,
        "head_dim": head_dim,
        "intermediate_size": int(meta("feed_forward_length")),
        "context_length": int(meta("context_length", 2048)),
        "rope_theta": float(meta("rope.freq_base", 10000.0)),
        "rms_norm_eps": float(meta("attention.layer_norm_rms_epsilon", 1e-5)),
        "tie_embeddings": "lm_head.weight" not in state,
    }
    for key in NANOCHAT_KEYS:
        if key in fields:
            config[key.split(".", 1)[1]] = int(fields[key])
    return GGUFContents(config, state, types, fields)


def _our_name(name: str) -> str | None:
    """This model's parameter name for GGUF tensor ``name`` (None: not one of ours)."""
    base, _, suffix = name.rpartition(".")
    if suffix != "weight":
        return None
    if base in TOP_NAMES:
        return f"{TOP_NAMES[base]}.weight"
    parts = base.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in BLOCK_NAMES:
        return f"layers.{parts[1]}.{BLOCK_NAMES[parts[2]]}.weight"
    return None


def gguf_tokenizer(fields: dict[str, Any]) -> Any:
    """The ``pretrained`` tokenizer of a GGUF file's ``tokenizer.ggml.*`` fields.

    Raises:
        UsageError: no vocabulary, or not a byte-level BPE one.
    """
    from nanochat.plugins.tokenizers.gguf_vocab import tokenizer_from_gguf
    from nanochat.plugins.tokenizers.pretrained import (
        PretrainedTokenizer,
        choose_aliases,
        detect_chat_format,
    )

    model = fields.get("tokenizer.ggml.model")
    if model is None:
        raise UsageError("the GGUF file has no tokenizer (tokenizer.ggml.* keys)")
    if model != "gpt2":
        raise UsageError(
            f"the GGUF tokenizer is {model!r}; nanochat imports byte-level BPE ('gpt2') ones"
        )
    tokens = [str(t) for t in fields["tokenizer.ggml.tokens"]]
    kinds = [int(k) for k in fields.get("tokenizer.ggml.token_type", [1] * len(tokens))]
    merges = [str(m) for m in fields.get("tokenizer.ggml.merges", [])]
    pre = str(fields.get("tokenizer.ggml.pre", "default"))
    hf, specials = tokenizer_from_gguf(tokens, kinds, merges, pre, fields.get(PRE_PATTERN_KEY))
    template = fields.get("tokenizer.chat_template")

    def token(key: str) -> str | None:
        index = fields.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[int(index)] if index is not None and 0 <= int(index) < len(tokens) else None

    fmt = detect_chat_format(template, specials)
    aliases = choose_aliases(specials, fmt, token("bos"), token("eos"))
    return PretrainedTokenizer(hf, specials, aliases, fmt, template)


def write_gguf(model: Llama, tokenizer: Any, out: Path) -> list[Path]:
    """Write ``model`` (fp32 tensors) and, when it has a BPE vocabulary, ``tokenizer`` as one
    GGUF file at ``out`` (a ``.gguf`` path, or a folder to write ``model.gguf`` into).

    Returns:
        The file written.
    """
    import gguf

    c = model.config
    path = out / "model.gguf" if out.is_dir() or not out.suffix else out
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("nanochat llama")
    writer.add_block_count(c.n_layer)
    writer.add_context_length(c.max_context)
    writer.add_embedding_length(c.n_embd)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.n_head)
    writer.add_head_count_kv(c.n_kv_head)
    writer.add_rope_dimension_count(c.head_dim)
    writer.add_rope_freq_base(c.rope_theta)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_uint32(NANOCHAT_KEYS[0], c.sequence_len)
    writer.add_uint32(NANOCHAT_KEYS[1], c.vocab_multiple)
    _add_tokenizer(writer, tokenizer)
    for name, values in gguf_tensors(model).items():
        writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return [path]


def gguf_tensors(model: Llama) -> dict[str, np.ndarray]:
    """The model's tensors by GGUF name, fp32, vocabulary padding cut, Q/K rows interleaved."""
    c = model.config
    by_ours = {ours: gguf_name for gguf_name, ours in TOP_NAMES.items()}
    by_ours.update({ours: gguf_name for gguf_name, ours in BLOCK_NAMES.items()})
    tensors: dict[str, np.ndarray] = {}
    for name, param in model.state_dict().items():
        values = param.detach().float().cpu().numpy()
        if name.startswith("layers."):
            _, index, rest = name.split(".", 2)
            gguf_name = f"blk.{index}.{by_ours[rest.removesuffix('.weight')]}.weight"
        else:
            gguf_name = f"{by_ours[name.removesuffix('.weight')]}.weight"
        if name in ("embed_tokens.weight", "lm_head.weight"):
            values = values[: c.vocab_size]
        if name.endswith("q_proj.weight"):
            values = interleave_rows(values, c.n_head)
        elif name.endswith("k_proj.weight"):
            values = interleave_rows(values, c.n_kv_head)
        tensors[gguf_name] = np.ascontiguousarray(values)
    return tensors


def _hf_bpe_vocabulary(tokenizer: Any) -> tuple[list[str], list[str], set[int], str] | None:
    """Tokens, merges, special ids and split regex of a tokenizer trained by HF `tokenizers`
    with a regex split (the ``hf-bpe`` plugin); None for any other."""
    import json

    hf = getattr(tokenizer, "hf", None)
    if hf is None or not hasattr(hf, "to_str"):
        return None
    data = json.loads(hf.to_str())
    model, pre = data.get("model") or {}, data.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    split = next((p for p in parts if p.get("type") == "Split"), None)
    if model.get("type") != "BPE" or split is None:
        return None
    tokens = [""] * tokenizer.vocab_size
    for token, index in model["vocab"].items():
        tokens[index] = token
    for name, index in tokenizer.special_tokens.items():
        tokens[index] = name
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, merges, set(tokenizer.special_tokens.values()), split["pattern"]["Regex"]


def _add_tokenizer(writer: Any, tokenizer: Any) -> None:
    """The tokenizer's GGUF fields, when it can give its BPE vocabulary and merges: a
    ``pretrained`` tokenizer as it came, an ``hf-bpe`` one with its split regex under
    ``nanochat.pre_pattern`` (pre-tokenizer name ``nanochat``, which only nanochat reads)."""
    from nanochat.core import special_tokens as st

    if hasattr(tokenizer, "bpe_vocabulary"):
        tokens, merges = tokenizer.bpe_vocabulary()
        special_ids = set(tokenizer.specials.values())
        pre = tokenizer.pre_tokenizer_name()
    elif (trained := _hf_bpe_vocabulary(tokenizer)) is not None:
        tokens, merges, special_ids, pattern = trained
        pre = "nanochat"
        writer.add_string(PRE_PATTERN_KEY, pattern)
    else:
        logger.warning("the run's tokenizer has no BPE vocabulary to write; the GGUF has none")
        return
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i in special_ids else 1 for i in range(len(tokens))])
    writer.add_token_merges(merges)
    special = tokenizer.special_tokens
    if st.BOS in special:
        writer.add_bos_token_id(special[st.BOS])
    if st.ASSISTANT_END in special:
        writer.add_eos_token_id(special[st.ASSISTANT_END])
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)
