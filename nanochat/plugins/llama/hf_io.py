"""Hugging Face Llama folders (``config.json``, ``*.safetensors``, ``tokenizer.json``) to and
from the ``llama`` model and the ``pretrained`` tokenizer.

This model's parameter names are HF's without the ``model.`` prefix, and its rotary layout is
HF's, so reading and writing are renames (plus the vocabulary padding, cut on export).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nanochat.core import special_tokens as st
from nanochat.core.errors import UsageError
from nanochat.plugins.llama.model import Llama

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
WEIGHTS_FILE = "model.safetensors"
NANOCHAT_TOKENIZER_DIR = "nanochat_tokenizer"


@dataclass
class HFContents:
    """What a HF folder holds, converted: the model config and its tensors (fp32)."""

    config: dict[str, Any]
    state: dict[str, torch.Tensor]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path} is missing (a Hugging Face folder needs it)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} does not hold a JSON object")
    return data


def read_hf_folder(folder: Path) -> HFContents:
    """Read a ``LlamaForCausalLM`` folder into a ``llama`` config and state dict.

    Raises:
        UsageError: a missing file, another architecture, or unsupported features.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    hf = _read_json(folder / CONFIG_FILE)
    if hf.get("model_type") != "llama":
        raise UsageError(f"{folder} holds a {hf.get('model_type')!r} model, not 'llama'")
    rope = hf.get("rope_parameters") or {}  # newer transformers write rope settings here
    rope_type = rope.get("rope_type", "default")
    if hf.get("rope_scaling") or rope_type != "default":
        raise UsageError(f"{folder} uses rotary scaling, which the llama plugin does not implement")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise UsageError(f"{folder} has biases, which the llama plugin does not implement")
    if hf.get("hidden_act", "silu") != "silu":
        raise UsageError(f"{folder} uses activation {hf.get('hidden_act')!r}, not silu")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UsageError(f"{folder} has no *.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            tensors = load_file(str(file), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise UsageError(f"weights {file} are corrupt: {exc}") from None
        for name, tensor in tensors.items():
            if "rotary_emb" not in name:  # old exports saved the rotary frequencies
                state[name.removeprefix("model.")] = tensor.float()
    n_head = int(hf["num_attention_heads"])
    n_embd = int(hf["hidden_size"])
    tied = bool(hf.get("tie_word_embeddings", False))
    if tied:
        state.pop("lm_head.weight", None)
    config = {
        "vocab_size": int(hf["vocab_size"]),
        "n_layer": int(hf["num_hidden_layers"]),
        "n_head": n_head,
        "n_kv_head": int(hf.get("num_key_value_heads") or n_head),
        "n_embd": n_embd,
        "head_dim": int(hf.get("head_dim") or n_embd // n_head),
        "intermediate_size": int(hf["intermediate_size"]),
        "context_length": int(hf.get("max_position_embeddings", 2048)),
        "rope_theta": float(rope.get("rope_theta") or hf.get("rope_theta") or 10000.0),
        "rms_norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
        "tie_embeddings": tied,
    }
    extra = hf.get("nanochat") or {}
    for key in ("sequence_len", "vocab_multiple"):
        if key in extra:
            config[key] = int(extra[key])
    return HFContents(config, state)


def hf_tokenizer(folder: Path) -> Any:
    """The ``pretrained`` tokenizer of a HF folder (``tokenizer.json`` and, if present,
    ``tokenizer_config.json`` for the chat template and the BOS/EOS tokens)."""
    from nanochat.plugins.tokenizers.pretrained import from_hf_json

    data = _read_json(folder / TOKENIZER_FILE)
    config = (
        _read_json(folder / TOKENIZER_CONFIG_FILE)
        if (folder / TOKENIZER_CONFIG_FILE).is_file()
        else {}
    )

    def token(key: str) -> str | None:
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        return value if isinstance(value, str) else None

    template = config.get("chat_template")
    if isinstance(template, list):  # several named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return from_hf_json(data, template, token("bos_token"), token("eos_token"))


def hf_config(model: Llama, tokenizer: Any) -> dict[str, Any]:
    """The ``config.json`` of ``model`` as ``LlamaForCausalLM``."""
    c = model.config
    special = getattr(tokenizer, "special_tokens", {})
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.n_embd,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": c.max_context,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": c.tie_embeddings,
        "torch_dtype": "float32",
        "bos_token_id": special.get(st.BOS),
        "eos_token_id": special.get(st.ASSISTANT_END),
        "nanochat": {"sequence_len": c.sequence_len, "vocab_multiple": c.vocab_multiple},
    }


def write_hf_folder(model: Llama, tokenizer: Any, out: Path) -> list[Path]:
    """Write ``model`` and ``tokenizer`` as a HF Llama folder at ``out``.

    The weights are fp32 ``model.safetensors`` with HF's names and the vocabulary padding cut.
    A tokenizer that has a HF form (``hf_json``) is written as ``tokenizer.json`` and
    ``tokenizer_config.json``; any other is saved by its plugin into ``nanochat_tokenizer/``.

    Returns:
        The files written.
    """
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    c = model.config
    tensors = {}
    for name, param in model.state_dict().items():
        value = param.detach().float().cpu()
        if name in ("embed_tokens.weight", "lm_head.weight"):
            value = value[: c.vocab_size]
        hf_name = name if name == "lm_head.weight" else f"model.{name}"
        tensors[hf_name] = value.contiguous()
    written = [out / CONFIG_FILE, out / WEIGHTS_FILE]
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    (out / CONFIG_FILE).write_text(json.dumps(hf_config(model, tokenizer), indent=2) + "\n")
    written += write_tokenizer(tokenizer, out)
    return written


def write_tokenizer(tokenizer: Any, out: Path) -> list[Path]:
    """``tokenizer.json`` + ``tokenizer_config.json`` when the tokenizer has a HF form, else the
    plugin's own files in ``nanochat_tokenizer/``."""
    if not hasattr(tokenizer, "hf_json"):
        tokenizer.save(out / NANOCHAT_TOKENIZER_DIR)
        return [out / NANOCHAT_TOKENIZER_DIR]
    (out / TOKENIZER_FILE).write_text(json.dumps(tokenizer.hf_json(), ensure_ascii=False))
    by_id = {i: t for t, i in tokenizer.specials.items()}
    special = tokenizer.special_tokens
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": by_id.get(special.get(st.BOS)),
        "eos_token": by_id.get(special.get(st.ASSISTANT_END)),
        "model_max_length": 1_000_000,
    }
    if tokenizer.chat_template:
        config["chat_template"] = tokenizer.chat_template
    (out / TOKENIZER_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return [out / TOKENIZER_FILE, out / TOKENIZER_CONFIG_FILE]
