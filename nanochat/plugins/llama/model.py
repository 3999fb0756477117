"""The Llama: a decoder-only transformer in the layout of Llama 2/3 and SmolLM2.

Reading order: config, RMSNorm, rotary, attention, MLP, block, model.

- RMSNorm with a learned gain (Zhang & Sennrich) before attention, before the MLP and before
  the head, computed in fp32.
- Rotary position embeddings (Su et al., RoFormer) with a configurable base ``rope_theta``, in
  the "rotate half" layout of Hugging Face checkpoints: dimension ``i`` pairs with
  ``i + head_dim / 2``. (GGUF files store Q/K rows permuted for interleaved pairs; the GGUF
  reader and writer convert, see :mod:`.gguf_io`.)
- Grouped-query attention (Ainslie et al., GQA).
- SwiGLU MLP ``down(silu(gate(x)) * up(x))`` (Shazeer, 2020).
- No biases; the output head may share the token embedding (``tie_embeddings``).

Parameter names follow Hugging Face's ``LlamaForCausalLM`` without its ``model.`` prefix
(``embed_tokens``, ``layers.N.self_attn.q_proj``, ...), so conversions are renames.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from nanochat.plugins.gpt import cpu_attention
from nanochat.plugins.gpt.kv_cache import CachedPass, KVCache, begin_cached_pass

_SDPA_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)


@dataclass
class LlamaConfig:
    """The JSON-serialisable shape of a Llama (stored in every checkpoint).

    Attributes:
        vocab_size: number of token ids the tokenizer produces.
        n_layer: transformer blocks.
        n_head: query heads.
        n_kv_head: key/value heads; divides ``n_head``.
        n_embd: width of the residual stream.
        head_dim: width of one head.
        intermediate_size: hidden width of the SwiGLU MLP.
        sequence_len: training context length.
        max_context: the longest sequence generation may reach (rotary table length).
        rope_theta: rotary base.
        rms_norm_eps: RMSNorm epsilon.
        tie_embeddings: the head reuses the token embedding.
        vocab_multiple: embedding/head rows are padded up to a multiple of this.
    """

    vocab_size: int = 4096
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = 4
    n_embd: int = 256
    head_dim: int = 64
    intermediate_size: int = 704
    sequence_len: int = 256
    max_context: int = 1024
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = False
    vocab_multiple: int = 64

    def __post_init__(self) -> None:
        if self.n_head % self.n_kv_head != 0:
            raise ValueError(f"n_kv_head={self.n_kv_head} must divide n_head={self.n_head}")
        if self.head_dim % 2 != 0:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if self.max_context < self.sequence_len:
            raise ValueError(f"max_context={self.max_context} < sequence_len={self.sequence_len}")

    @property
    def padded_vocab_size(self) -> int:
        """``vocab_size`` rounded up to a multiple of ``vocab_multiple``."""
        m = self.vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict (for JSON)."""
        return asdict(self)


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x²) + eps)`` over the last dimension, computed in fp32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` and scale it by the learned gain."""
        h = x.float()
        h = h * torch.rsqrt(h.square().mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotary_tables(
    length: int, head_dim: int, theta: float, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine of rotary angles, shape ``(1, length, 1, head_dim/2)`` (fp32)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    inv_freq = 1.0 / (theta**exponents)
    t = torch.arange(length, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)
    return freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs ``(x[i], x[i + d/2])`` of ``x`` (``B, T, H, D``) forwards by their angles
    (``x * cos + rotate_half(x) * sin`` in Hugging Face's terms)."""
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    """Grouped-query causal self-attention with rotary embeddings."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_dim = config.head_dim
        c, d = config.n_embd, config.head_dim
        self.q_proj = nn.Linear(c, self.n_head * d, bias=False)
        self.k_proj = nn.Linear(c, self.n_kv_head * d, bias=False)
        self.v_proj = nn.Linear(c, self.n_kv_head * d, bias=False)
        self.o_proj = nn.Linear(self.n_head * d, c, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        cached: CachedPass | None = None,
    ) -> torch.Tensor:
        """Causal attention over ``x``; with ``cached``, also over what each cache row holds."""
        B, T, _ = x.shape
        cos, sin = cos_sin
        q = apply_rotary(self.q_proj(x).view(B, T, self.n_head, self.head_dim), cos, sin)
        k = apply_rotary(self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim), cos, sin)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
        if cached is not None:
            k, v = cached.cache.insert_kv(
                self.layer_idx, k, v, cached.positions, cached.length, cached.rows, cached.start
            )
            k, v = k.to(q.dtype), v.to(q.dtype)
            if cached.ends is not None and cpu_attention.usable(q):
                y = cpu_attention.attend_one_token(q, k, v, cached.spans(None))
                return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))
        groups = self.n_head // self.n_kv_head
        gqa: dict[str, Any] = {}
        if groups > 1:
            if _SDPA_GQA:
                gqa["enable_gqa"] = True
            else:
                k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        if cached is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, **gqa)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=cached.mask, is_causal=cached.causal, **gqa
            )
        return self.o_proj(y.transpose(1, 2).contiguous().view(B, T, -1))


class MLP(nn.Module):
    """SwiGLU feed-forward layer: ``down_proj(silu(gate_proj(x)) * up_proj(x))``."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        c, h = config.n_embd, config.intermediate_size
        self.gate_proj = nn.Linear(c, h, bias=False)
        self.up_proj = nn.Linear(c, h, bias=False)
        self.down_proj = nn.Linear(h, c, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm transformer block: attention then MLP, each added to the residual stream."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.n_embd, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.n_embd, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        cached: CachedPass | None = None,
    ) -> torch.Tensor:
        """Apply the block."""
        x = x + self.self_attn(self.input_layernorm(x), cos_sin, cached)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    """The language model: token ids in, next-token logits (or the loss) out.

    Args:
        config: the model's shape.
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        vp = config.padded_vocab_size
        self.embed_tokens = nn.Embedding(vp, config.n_embd)
        self.layers = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.norm = RMSNorm(config.n_embd, config.rms_norm_eps)
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.n_embd, vp, bias=False)
        cos, sin = self._tables(self.embed_tokens.weight.device)
        self.cos: torch.Tensor
        self.sin: torch.Tensor
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        return rotary_tables(c.max_context, c.head_dim, c.rope_theta, device=device)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise every weight for training from scratch (also recomputes the rotary tables,
        e.g. after ``to_empty``).

        Untied: embedding ~ N(0, 1), head ~ N(0, 0.001²); tied: the shared matrix ~ N(0, 0.02²).
        The input projections of attention and MLP ~ U(-s, s) with ``s = sqrt(3 / fan_in)``;
        the output projections ``o_proj`` and ``down_proj`` start at zero, so every block starts
        as the identity; norm gains start at 1.
        """
        if self.lm_head is None:
            nn.init.normal_(self.embed_tokens.weight, mean=0.0, std=0.02)
        else:
            nn.init.normal_(self.embed_tokens.weight, mean=0.0, std=1.0)
            nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.001)
        for block in self.block_list():
            attn, mlp = block.self_attn, block.mlp
            for lin in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj):
                s = math.sqrt(3.0 / lin.in_features)
                nn.init.uniform_(lin.weight, -s, s)
            nn.init.zeros_(attn.o_proj.weight)
            nn.init.zeros_(mlp.down_proj.weight)
            nn.init.ones_(block.input_layernorm.weight)
            nn.init.ones_(block.post_attention_layernorm.weight)
        nn.init.ones_(self.norm.weight)
        cos, sin = self._tables(self.cos.device)
        self.cos.copy_(cos)
        self.sin.copy_(sin)

    def block_list(self) -> list[Block]:
        """The transformer blocks, in order."""
        return [cast(Block, block) for block in self.layers]

    @property
    def sequence_len(self) -> int:
        """The training context length."""
        return self.config.sequence_len

    @property
    def max_context(self) -> int:
        """The longest sequence generation can reach."""
        return self.config.max_context

    def head_weight(self) -> torch.Tensor:
        """The output head's matrix (the token embedding when tied)."""
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        loss_reduction: str = "mean",
    ) -> torch.Tensor:
        """Run the model over whole sequences (training, scoring).

        Args:
            idx: token ids, shape ``(B, T)``.
            targets: next-token ids ``(B, T)``; ``-1`` marks positions without a loss.
            loss_reduction: ``"mean"``, ``"sum"`` or ``"none"`` (then shape ``(B*T,)``).

        Returns:
            Logits ``(B, T, vocab_size)`` in fp32 when ``targets`` is None, else the
            cross-entropy loss.
        """
        T = idx.size(1)
        if self.config.max_context < T:
            raise ValueError(f"sequence of {T} tokens exceeds max_context {self.max_context}")
        cos_sin = self.cos[:, :T], self.sin[:, :T]
        x = self.embed_tokens(idx)
        for block in self.block_list():
            x = block(x, cos_sin)
        logits = self._logits(x)
        if targets is None:
            return logits
        return F.cross_entropy(
            logits.view(-1, logits.size(-1)),
            targets.reshape(-1),
            ignore_index=-1,
            reduction=loss_reduction,
        )

    def forward_cached(
        self, idx: torch.Tensor, cache: KVCache, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Run ``T`` new tokens per row of ``cache``; every row at its own position.

        Args:
            idx: new token ids ``(B, T)``.
            cache: from :meth:`new_cache`; each used row's position moves on by ``T``.
            rows: the cache rows the ``B`` lines continue (None: all ``cache.batch_size`` rows).

        Returns:
            fp32 logits ``(B, T, vocab_size)``.
        """
        T = idx.size(1)
        cos_sin, cached = begin_cached_pass(
            cache, idx, rows, self.cos, self.sin, self.config.max_context
        )
        x = self.embed_tokens(idx)
        for block in self.block_list():
            x = block(x, cos_sin, cached)
        cache.advance(T, cached.rows)
        return self._logits(x)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(x), self.head_weight())[..., : self.config.vocab_size].float()

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters by optimizer role.

        Returns:
            ``{"matrix": the blocks' 2-D weights (Muon), "embedding": [embed_tokens],
            "unembedding": [lm_head] (empty when tied), "scalar": the norm gains}``; together
            they hold every parameter exactly once.
        """
        matrix = [p for p in self.layers.parameters() if p.ndim >= 2]
        scalar = [p for p in self.layers.parameters() if p.ndim < 2]
        scalar.append(self.norm.weight)
        head = [] if self.lm_head is None else [cast(nn.Parameter, self.lm_head.weight)]
        return {
            "matrix": matrix,
            "embedding": [cast(nn.Parameter, self.embed_tokens.weight)],
            "unembedding": head,
            "scalar": scalar,
        }

    def num_params(self) -> int:
        """Number of parameters (padded vocabulary rows included; a tied matrix once)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward) at ``sequence_len``, for MFU.

        ``6 * N + 12 * L * H * Dh * T`` as for the GPT: ``N`` counts the weights of every
        matrix multiply (the blocks' matrices and the head, which is the embedding matrix when
        tied; the embedding lookup and the norm gains are not multiplies).
        """
        c = self.config
        n_matmul = sum(p.numel() for p in self.layers.parameters() if p.ndim >= 2)
        n_matmul += self.head_weight().numel()
        return 6 * n_matmul + 12 * c.n_layer * c.n_head * c.head_dim * c.sequence_len

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty generation cache of ``batch_size`` rows (``max_len`` <= ``max_context``)."""
        c = self.config
        max_len = max_len or c.max_context
        if max_len > c.max_context:
            raise ValueError(f"max_len={max_len} exceeds the model's context {c.max_context}")
        return KVCache(batch_size, c.n_kv_head, max_len, c.head_dim, c.n_layer)
