"""Options of the ``llama`` model plugin (no torch import: listing components stays cheap)."""

from __future__ import annotations

from dataclasses import dataclass

from nanochat.core.config import option


@dataclass
class LlamaOptions:
    """The shape of a Llama trained from scratch (imported models take theirs from the file).

    Attributes:
        depth: number of transformer blocks.
        n_embd: width of the residual stream (a multiple of ``head_dim``).
        head_dim: width of one attention head; ``n_head = n_embd / head_dim``.
        n_kv_head: key/value heads (grouped-query attention); ``None`` means ``n_head``.
            Must divide ``n_head``.
        mlp_ratio: SwiGLU hidden width as a multiple of ``n_embd`` (rounded up to 64).
        sequence_len: the context the model is trained on.
        context_factor: generation may reach ``context_factor * sequence_len`` tokens.
        rope_theta: base of the rotary frequencies.
        rms_norm_eps: epsilon of RMSNorm.
        tie_embeddings: share the token embedding with the output head.
        vocab_multiple: the embedding and head are padded to a multiple of this many rows.
        optimizer: ``muon``: Muon for the blocks' matrices, AdamW for the rest (training from
            scratch); ``adamw``: AdamW for every parameter, the matrices at ``matrix_lr``
            (fine-tuning a pretrained model: ``nanochat import`` records this choice).
    """

    depth: int = option(4, ge=1, le=1024)
    n_embd: int = option(256, ge=2, le=65536)
    head_dim: int = option(64, ge=2, le=4096)
    n_kv_head: int | None = option(None, ge=1, le=4096)
    mlp_ratio: float = option(2.75, gt=0)
    sequence_len: int = option(256, ge=1, le=1_048_576)
    context_factor: int = option(4, ge=1, le=1024)
    rope_theta: float = option(10000.0, gt=0)
    rms_norm_eps: float = option(1e-5, gt=0)
    tie_embeddings: bool = False
    vocab_multiple: int = option(64, ge=1)
    optimizer: str = option("muon", choices=("muon", "adamw"))


@dataclass
class ImportOptions:
    """Options of the ``import`` stage (what ``nanochat import PATH`` runs).

    Attributes:
        path: a ``.gguf`` file or a Hugging Face folder (``config.json``, ``*.safetensors``,
            ``tokenizer.json``).
        sequence_len: the context post-training stages use (capped at the model's own).
        max_context: the longest sequence generation may reach (capped at the model's own;
            each cache row of the server holds this many tokens).
    """

    path: str = option("", doc="a .gguf file or a Hugging Face Llama folder")
    sequence_len: int = option(1024, ge=8, le=1_048_576)
    max_context: int = option(2048, ge=8, le=1_048_576)
