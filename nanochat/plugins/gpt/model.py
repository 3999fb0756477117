"""The GPT: a decoder-only transformer in the style of nanoGPT / nanochat.

Reading order: config, helpers (RMSNorm, rotary), attention, MLP, block, model.

- Rotary position embeddings (Su et al., RoFormer), no learned positions.
- RMSNorm without parameters (Zhang & Sennrich) before attention, before the MLP, on the
  queries and keys (QK-norm, Henry et al.), right after the token embedding and before the head.
- ReLU² MLP with a 4x expansion (So et al., Primer).
- Grouped-query attention (Ainslie et al., GQA): ``n_kv_head`` key/value heads shared by groups
  of ``n_head / n_kv_head`` query heads.
- Untied token embedding (``wte``) and output head (``lm_head``); no biases anywhere.
- Logit softcap ``softcap * tanh(logits / softcap)`` computed in fp32 (Gemma 2).
- The vocabulary is padded to a multiple of ``vocab_multiple`` rows; logits are sliced back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from nanochat.plugins.gpt.infer_linear import InferenceWeights
from nanochat.plugins.gpt.kv_cache import CachedPass, KVCache, begin_cached_pass

ROTARY_BASE = 10000.0
ROTARY_LEN_FACTOR = 10  # rotary tables cover this many times sequence_len (for generation)
_EPS32 = torch.finfo(torch.float32).eps
_SDPA_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)


@dataclass
class GPTConfig:
    """The JSON-serialisable shape of a GPT (stored in every checkpoint).

    Attributes:
        vocab_size: number of token ids the tokenizer produces.
        n_layer: transformer blocks.
        n_head: query heads.
        n_kv_head: key/value heads; divides ``n_head``.
        n_embd: width of the residual stream.
        head_dim: width of one head (attention width is ``n_head * head_dim``).
        sequence_len: training context length.
        softcap: logit softcap; 0 disables it.
        vocab_multiple: embedding/head rows are padded up to a multiple of this.
    """

    vocab_size: int = 4096
    n_layer: int = 4
    n_head: int = 2
    n_kv_head: int = 2
    n_embd: int = 256
    head_dim: int = 128
    sequence_len: int = 256
    softcap: float = 15.0
    vocab_multiple: int = 64

    def __post_init__(self) -> None:
        if self.n_head % self.n_kv_head != 0:
            raise ValueError(f"n_kv_head={self.n_kv_head} must divide n_head={self.n_head}")
        if self.head_dim % 2 != 0:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")

    @property
    def padded_vocab_size(self) -> int:
        """``vocab_size`` rounded up to a multiple of ``vocab_multiple``."""
        m = self.vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict (for JSON)."""
        return asdict(self)


def norm(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free RMSNorm over the last dimension.

    On the CPU ``F.rms_norm`` is a composite of ~16 operations with two copies, which dominates
    one-token decode steps; the plain formula there is the same function in 6 (in fp32, for
    bf16 inputs too, as ``F.rms_norm`` computes it).
    """
    if x.device.type == "cpu":
        if x.dtype == torch.float32:
            return x * torch.rsqrt(x.square().mean(-1, keepdim=True).add_(_EPS32))
        scale = x.float().square_().mean(-1, keepdim=True).add_(torch.finfo(x.dtype).eps)
        return (x * scale.rsqrt_()).to(x.dtype)
    return F.rms_norm(x, (x.size(-1),))


def rotary_tables(
    seq_len: int, head_dim: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables of rotary embeddings, shape ``(1, seq_len, 1, head_dim/2)``."""
    inv_freq = 1.0 / ROTARY_BASE ** (
        torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim
    )
    t = torch.arange(seq_len, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)
    return freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs ``(x[i], x[i + d/2])`` of ``x`` (``B, T, H, D``) by per-position angles."""
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def full_width_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotary tables widened to the whole head, ``[cos, cos]`` and ``[sin, -sin]``, for
    :func:`apply_rotary_full`."""
    return torch.cat([cos, cos], dim=-1), torch.cat([sin, -sin], dim=-1)


def apply_rotary_full(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """:func:`apply_rotary` with full-width tables (:func:`full_width_tables`): the same
    products and sums, so bit-identical, in 4 operations instead of 9."""
    return x * cos + x.roll(x.size(-1) // 2, dims=-1) * sin


class CausalSelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention with rotary and QK-norm."""

    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = (
            config.n_head,
            config.n_kv_head,
            config.head_dim,
        )
        c = config.n_embd
        self.c_q = nn.Linear(c, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(c, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(c, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(self.n_head * self.head_dim, c, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        cached: CachedPass | None = None,
    ) -> torch.Tensor:
        """Causal attention over ``x``; with ``cached``, also over what each cache row holds."""
        B, T, _ = x.shape
        cos, sin = cos_sin
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        q, k = norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))
        y = self.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), cached)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, -1))

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cached: CachedPass | None
    ) -> torch.Tensor:
        """Attention of queries ``(B, H, T, D)`` over the new keys/values (``B, H_kv, T, D``)
        and, with ``cached``, over what the cache rows already hold; ``(B, H, T, D)``."""
        gqa: dict[str, Any] = {}
        if cached is not None:
            k, v = cached.cache.insert_kv(
                self.layer_idx, k, v, cached.positions, cached.length, cached.rows, cached.start
            )
            k, v = k.to(q.dtype), v.to(q.dtype)
        if self.n_head != self.n_kv_head:
            if _SDPA_GQA:
                gqa["enable_gqa"] = True
            else:
                groups = self.n_head // self.n_kv_head
                k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        if cached is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, **gqa)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=cached.mask, is_causal=cached.causal, **gqa
        )


class MLP(nn.Module):
    """Feed-forward layer: ``c_proj(relu(c_fc(x))²)`` with a 4x hidden width."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP."""
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    """Pre-norm transformer block: attention then MLP, each added to the residual stream."""

    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        cached: CachedPass | None = None,
    ) -> torch.Tensor:
        """Apply the block."""
        x = x + self.attn(norm(x), cos_sin, cached)
        return x + self.mlp(norm(x))

    def infer(
        self,
        x: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        weights: InferenceWeights,
        cached: CachedPass | None = None,
    ) -> torch.Tensor:
        """:meth:`forward` without autograd, in fewer operations (a decode step costs per
        operation, not per FLOP): one q/k/v projection, one rotary and one norm for queries and
        keys together, the matrices multiplied in ``weights``' layouts. ``rotary`` holds
        full-width tables (:func:`full_width_tables`). The same function as :meth:`forward`;
        only the fused and split products may round differently."""
        attn, B, T = self.attn, x.size(0), x.size(1)
        n_qk = attn.n_head + attn.n_kv_head
        qkv = weights.linear(norm(x), attn.c_q.weight, attn.c_k.weight, attn.c_v.weight)
        qkv = qkv.view(B, T, -1, attn.head_dim)
        qk = norm(apply_rotary_full(qkv[:, :, :n_qk], *rotary)).transpose(1, 2)
        v = qkv[:, :, n_qk:].transpose(1, 2)
        y = attn.attend(qk[:, : attn.n_head], qk[:, attn.n_head :], v, cached)
        x = x + weights.linear(y.transpose(1, 2).reshape(B, T, -1), attn.c_proj.weight)
        h = F.relu_(weights.linear(norm(x), self.mlp.c_fc.weight)).square_()
        return x + weights.linear(h, self.mlp.c_proj.weight)


class GPT(nn.Module):
    """The language model: token ids in, next-token logits (or the loss) out.

    Args:
        config: the model's shape.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        vp = config.padded_vocab_size
        self.wte = nn.Embedding(vp, config.n_embd)
        self.blocks = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.lm_head = nn.Linear(config.n_embd, vp, bias=False)
        self.rotary_len = config.sequence_len * ROTARY_LEN_FACTOR
        cos, sin = rotary_tables(self.rotary_len, config.head_dim, device=self.wte.weight.device)
        self.cos: torch.Tensor
        self.sin: torch.Tensor
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self._full_key: tuple[int, int, int, torch.dtype] | None = None
        self._weights = InferenceWeights()
        self._full = (cos, sin)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise every weight (also recomputes the rotary tables, e.g. after ``to_empty``).

        Token embedding ~ N(0, 1); head ~ N(0, 0.001²); the input projections of attention and
        MLP ~ U(-s, s) with ``s = sqrt(3 / fan_in)`` (unit-variance outputs); the output
        projections ``c_proj`` start at zero, so every block starts as the identity.
        """
        nn.init.normal_(self.wte.weight, mean=0.0, std=1.0)
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.001)
        for block in self.block_list():
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                s = math.sqrt(3.0 / lin.in_features)
                nn.init.uniform_(lin.weight, -s, s)
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)
        cos, sin = rotary_tables(self.rotary_len, self.config.head_dim, device=self.cos.device)
        self.cos.copy_(cos)
        self.sin.copy_(sin)

    def block_list(self) -> list[Block]:
        """The transformer blocks, in order."""
        return [cast(Block, block) for block in self.blocks]

    @property
    def sequence_len(self) -> int:
        """The training context length."""
        return self.config.sequence_len

    @property
    def max_context(self) -> int:
        """The longest sequence generation can reach (the rotary tables' length)."""
        return self.rotary_len

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
        if self.rotary_len < T:
            raise ValueError(f"sequence of {T} tokens exceeds rotary length {self.rotary_len}")
        x = norm(self.wte(idx))
        if torch.is_grad_enabled():
            cos_sin = self.cos[:, :T], self.sin[:, :T]
            for block in self.block_list():
                x = block(x, cos_sin)
        else:
            cos, sin = self._full_tables()
            for block in self.block_list():
                x = block.infer(x, (cos[:, :T], sin[:, :T]), self._weights)
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
        x = norm(self.wte(idx))
        if torch.is_grad_enabled():
            cos_sin, cached = begin_cached_pass(
                cache, idx, rows, self.cos, self.sin, self.rotary_len
            )
            for block in self.block_list():
                x = block(x, cos_sin, cached)
        else:
            cos, sin = self._full_tables()
            rotary, cached = begin_cached_pass(cache, idx, rows, cos, sin, self.rotary_len)
            for block in self.block_list():
                x = block.infer(x, rotary, self._weights, cached)
        cache.advance(T, cached.rows)
        return self._logits(x)

    def _full_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotary tables in full width and in the dtype the projections produce (for
        :meth:`Block.infer`), rebuilt when that dtype or the half-width buffers changed
        (``init_weights``, a device move)."""
        device = self.cos.device.type
        dtype = self.lm_head.weight.dtype
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
        key = (self.cos.data_ptr(), self.cos._version, self.sin._version, dtype)
        if self._full_key != key:
            cos, sin = full_width_tables(self.cos, self.sin)
            self._full = cos.to(dtype), sin.to(dtype)
            self._full_key = key
        return self._full

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        cap = self.config.softcap
        if torch.is_grad_enabled():
            logits = self.lm_head(norm(x))[..., : self.config.vocab_size].float()
            return cap * torch.tanh(logits / cap) if cap > 0 else logits
        logits = self._weights.linear(norm(x), self.lm_head.weight)
        logits = logits[..., : self.config.vocab_size].float()
        # the head's output is ours to modify
        return logits.div_(cap).tanh_().mul_(cap) if cap > 0 else logits

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters by optimizer role.

        Returns:
            ``{"matrix": 2-D hidden weights (Muon), "embedding": [wte], "unembedding": [lm_head],
            "scalar": 0/1-D parameters (none in this model)}``; together they hold every
            parameter exactly once.
        """
        matrix = [p for p in self.blocks.parameters() if p.ndim >= 2]
        scalar = [p for p in self.blocks.parameters() if p.ndim < 2]
        return {
            "matrix": matrix,
            "embedding": [cast(nn.Parameter, self.wte.weight)],
            "unembedding": [cast(nn.Parameter, self.lm_head.weight)],
            "scalar": scalar,
        }

    def num_params(self) -> int:
        """Number of parameters (padded vocabulary rows included)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward) at ``sequence_len``, for MFU.

        ``6 * N + 12 * L * H * Dh * T``, where ``N`` counts the weights of every matrix multiply
        (all parameters except the token embedding, which is a lookup; the head's padded rows
        are included because they are computed): 2 FLOPs per weight per token forward, 4
        backward. The second term is attention itself: per layer and token, ``Q K^T`` and
        ``A V`` each cost ``2 * H * Dh * T`` forward, times 3 for forward + backward. As in
        the PaLM / nanoGPT convention the causal mask is not discounted, and norms, rotary,
        softmax and the softcap are not counted.
        """
        c = self.config
        n_matmul = self.num_params() - self.wte.weight.numel()
        return 6 * n_matmul + 12 * c.n_layer * c.n_head * c.head_dim * c.sequence_len

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty generation cache of ``batch_size`` rows (``max_len`` <= ``max_context``)."""
        c = self.config
        max_len = max_len or self.rotary_len
        if max_len > self.rotary_len:
            raise ValueError(f"max_len={max_len} exceeds the model's context {self.rotary_len}")
        return KVCache(batch_size, c.n_kv_head, max_len, c.head_dim, c.n_layer)
