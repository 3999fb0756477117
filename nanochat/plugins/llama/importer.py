"""The ``import`` stage: pretrained weights and their tokenizer become a run.

``nanochat import PATH --run NAME`` runs it (``nanochat run import -o import.path=PATH --model
llama --tokenizer pretrained`` is the same). It reads a GGUF file or a Hugging Face Llama folder,
saves the model's own tokenizer as the run's tokenizer and the weights as the stage's checkpoint.
The stage produces a chat model: ``nanochat chat``, ``serve``, the evals and the post-training
stages (``sft``, ``dpo``, ``rl``) continue from it like from any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nanochat.core.errors import UsageError
from nanochat.plugins.llama.factory import LlamaFactory
from nanochat.plugins.llama.model import Llama, LlamaConfig
from nanochat.plugins.llama.options import ImportOptions

logger = logging.getLogger(__name__)


@dataclass
class Imported:
    """A pretrained model read from disk, as this plugin's model and tokenizer."""

    model: Llama
    tokenizer: Any | None
    source_format: str
    tensor_types: dict[str, str]


def model_config(read: dict[str, Any], sequence_len: int, max_context: int) -> dict[str, Any]:
    """The ``llama`` config of an imported model: its own shape, and the contexts asked for
    (capped at what the model was trained for; a file nanochat wrote keeps its
    ``sequence_len``)."""
    own = int(read["context_length"])
    seq = min(int(read.get("sequence_len") or sequence_len), own)
    cfg = LlamaConfig(
        vocab_size=int(read["vocab_size"]),
        n_layer=int(read["n_layer"]),
        n_head=int(read["n_head"]),
        n_kv_head=int(read["n_kv_head"]),
        n_embd=int(read["n_embd"]),
        head_dim=int(read["head_dim"]),
        intermediate_size=int(read["intermediate_size"]),
        sequence_len=seq,
        max_context=max(seq, min(max_context, own)),
        rope_theta=float(read["rope_theta"]),
        rms_norm_eps=float(read["rms_norm_eps"]),
        tie_embeddings=bool(read["tie_embeddings"]),
        vocab_multiple=1,
    )
    return cfg.to_dict()


def read_pretrained(
    path: Path, sequence_len: int = 1024, max_context: int = 2048, tokenizer: bool = True
) -> Imported:
    """Read a GGUF file or a HF Llama folder into a model and its tokenizer (None when
    ``tokenizer`` is False: the weights alone).

    Raises:
        UsageError: the path is missing, of an unknown kind, or holds an unsupported model.
    """
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    if path.is_dir():
        from nanochat.plugins.llama.hf_io import hf_tokenizer, read_hf_folder

        hf = read_hf_folder(path)
        read, state, types, fmt = hf.config, hf.state, {}, "hf"
        tok = hf_tokenizer(path) if tokenizer else None
    else:
        with open(path, "rb") as handle:
            magic = handle.read(4)
        if magic != b"GGUF":
            raise UsageError(f"{path} is neither a GGUF file nor a Hugging Face folder")
        from nanochat.plugins.llama.gguf_io import gguf_tokenizer, read_gguf

        contents = read_gguf(path)
        read, state, types, fmt = contents.config, contents.state, contents.tensor_types, "gguf"
        tok = gguf_tokenizer(contents.fields) if tokenizer else None
    config = model_config(read, sequence_len, max_context)
    if tok is not None and tok.vocab_size != config["vocab_size"]:
        raise UsageError(
            f"{path}: the tokenizer has {tok.vocab_size} ids but the embedding "
            f"{config['vocab_size']} rows"
        )
    with torch.device("meta"):
        model = Llama(LlamaConfig(**config))
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise UsageError(f"{path}: the tensors do not fit a Llama: {' '.join(first[:3])}") from None
    cos, sin = model._tables(torch.device("cpu"))
    model.cos, model.sin = cos, sin
    return Imported(model, tok, fmt, types)


class ImportStage:
    """Turns a GGUF file or a HF folder into the run's tokenizer and first checkpoint.

    Args:
        options: the path and the contexts to use.
    """

    def __init__(self, options: ImportOptions) -> None:
        self.options = options

    def run(self, ctx: Any) -> dict[str, Any]:
        """Read, convert and save; return what was imported.

        Raises:
            UsageError: no path, a bad file, or a model plugin other than ``llama``.
        """
        o = self.options
        if not o.path:
            raise UsageError("import needs a file or folder: nanochat import PATH --run NAME")
        factory = ctx.model_factory()
        if not isinstance(factory, LlamaFactory):
            raise UsageError(
                "import makes llama models: pass --model llama (or use nanochat import)"
            )
        imported = read_pretrained(Path(o.path).expanduser(), o.sequence_len, o.max_context)
        model, tokenizer = imported.model, imported.tokenizer
        assert tokenizer is not None  # read with its tokenizer
        if ctx.is_main:
            ctx.save_tokenizer(tokenizer)
            meta = {
                "model_config": model.config.to_dict(),
                **ctx.model_record(),
                "tokenizer_vocab_size": tokenizer.vocab_size,
                "stage": ctx.stage_name,
                "imported_from": str(Path(o.path).expanduser().resolve()),
                "tensor_types": sorted(set(imported.tensor_types.values())),
            }
            ctx.checkpoints.save(0, model.state_dict(), meta=meta)
        fmt = getattr(tokenizer, "chat_format", None)
        result = {
            "format": imported.source_format,
            "params": model.num_params(),
            "vocab_size": tokenizer.vocab_size,
            "chat_format": fmt.name if fmt is not None else None,
            "tensor_types": sorted(set(imported.tensor_types.values())),
        }
        ctx.log(event="imported", **result)
        return result
