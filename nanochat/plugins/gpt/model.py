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
- The head, soft-cap and loss run fused in chunks of rows (:mod:`.head`).

Options from the 2025-26 small-model speedruns (all off in a config that predates them):

- Value embeddings (``value_embeds``): extra embedding tables of the input ids added to the
  attention values (ResFormer / modded-nanogpt); table ``j`` feeds layer ``j`` and layer
  ``L - K + j`` (the first and last ``K`` layers, U-net style), mixed as
  ``v = a * v + b * ve`` with learnable per-layer ``a, b``.
- Per-layer residual scalars (``layer_scalars``): before block ``i`` the stream becomes
  ``r_i * x + s_i * x0``, ``x0`` the normed embedding (learnable, starting at 1 and 0).
- U-net skips (``skip_connections``): the outputs of the first ``L // 2`` blocks are added to
  the inputs of the last ``L // 2`` blocks in mirror order, with learnable weights (from 0).
- Sliding-window attention (``window_pattern``): a pattern over ``S`` (the last ``short_window``
  tokens) and ``L`` (the whole context) tiled over the layers; the last layer is always ``L``.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from nanochat.plugins.gpt import cpu_attention
from nanochat.plugins.gpt.config import GPTConfig
from nanochat.plugins.gpt.head import head_loss
from nanochat.plugins.gpt.infer_linear import InferenceWeights
from nanochat.plugins.gpt.kv_cache import CachedPass, KVCache, begin_cached_pass, window_mask

ROTARY_BASE = 10000.0
ROTARY_LEN_FACTOR = 10  # rotary tables cover this many times sequence_len (for generation)
__all__ = ["GPT", "GPTConfig"]
_EPS32 = torch.finfo(torch.float32).eps
_SDPA_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)


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
        self.window = config.window(layer_idx)
        # value-embedding mix v = a * v + b * ve (only in layers that read a table)
        has_ve = config.value_table(layer_idx) is not None
        self.ve_lambdas = nn.Parameter(torch.full((2,), 0.5)) if has_ve else None

    def forward(
        self,
        x: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        cached: CachedPass | None = None,
        ve: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Causal attention over ``x``; with ``cached``, also over what each cache row holds.
        ``ve`` (``B, T, n_kv_head * head_dim``) is this layer's value embedding, if any."""
        B, T, _ = x.shape
        cos, sin = cos_sin
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        q, k = norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))
        v = self.mix_values(v, ve)
        y = self.attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), cached)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, -1))

    def mix_values(self, v: torch.Tensor, ve: torch.Tensor | None) -> torch.Tensor:
        """``a * v + b * ve`` in a layer that reads a value embedding, else ``v``."""
        if ve is None or self.ve_lambdas is None:
            return v
        return self.ve_lambdas[0] * v + self.ve_lambdas[1] * ve.view_as(v)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cached: CachedPass | None
    ) -> torch.Tensor:
        """Attention of queries ``(B, H, T, D)`` over the new keys/values (``B, H_kv, T, D``)
        and, with ``cached``, over what the cache rows already hold; ``(B, H, T, D)``. A
        sliding-window layer sees only its last ``window`` keys."""
        gqa: dict[str, Any] = {}
        if cached is not None:
            k, v = cached.cache.insert_kv(
                self.layer_idx, k, v, cached.positions, cached.length, cached.rows, cached.start
            )
            k, v = k.to(q.dtype), v.to(q.dtype)
            if cached.ends is not None and cpu_attention.usable(q):
                return cpu_attention.attend_one_token(q, k, v, cached.spans(self.window))
        if self.n_head != self.n_kv_head:
            if _SDPA_GQA:
                gqa["enable_gqa"] = True
            else:
                groups = self.n_head // self.n_kv_head
                k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        if cached is None and self.window:
            T = q.size(2)
            mask = window_mask(torch.arange(T, device=q.device)[None], T, self.window)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **gqa)
        if cached is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, **gqa)
        if self.window:
            mask = cached.windowed(self.window)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **gqa)
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
        ve: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Apply the block (``ve``: the value embedding of its attention, if any)."""
        x = x + self.attn(norm(x), cos_sin, cached, ve)
        return x + self.mlp(norm(x))

    def infer(
        self,
        x: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        weights: InferenceWeights,
        cached: CachedPass | None = None,
        ve: torch.Tensor | None = None,
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
        v = qkv[:, :, n_qk:]
        if ve is not None and attn.ve_lambdas is not None:
            a, b = weights.floats(attn.ve_lambdas)
            v = v * a + ve.view_as(v) * b
        v = v.transpose(1, 2)
        y = attn.attend(qk[:, : attn.n_head], qk[:, attn.n_head :], v, cached)
        x = x + weights.linear(y.transpose(1, 2).reshape(B, T, -1), attn.c_proj.weight)
        h = F.relu_(weights.linear(norm(x), self.mlp.c_fc.weight)).square_()
        return x + weights.linear(h, self.mlp.c_proj.weight)


class GPT(nn.Module):
    """The language model: token ids in, next-token logits (or the loss) out.

    Args:
        config: the model's shape.

    Attributes:
        fused_head: compute the loss with the fused chunked head (:mod:`.head`); False gives
            the plain path (whole logits, then cross-entropy), same values, for comparisons.
    """

    fused_head = True

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        vp = config.padded_vocab_size
        self.wte = nn.Embedding(vp, config.n_embd)
        self.blocks = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        kv_dim = config.n_kv_head * config.head_dim
        self.value_embeds = nn.ModuleList(
            [nn.Embedding(vp, kv_dim) for _ in range(config.value_embeds)]
        )
        n = config.n_layer
        scalars = config.layer_scalars
        self.resid_lambdas = nn.Parameter(torch.ones(n)) if scalars else None
        self.x0_lambdas = nn.Parameter(torch.zeros(n)) if scalars else None
        self.skip_weights = nn.Parameter(torch.zeros(n // 2)) if config.skip_connections else None
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
        projections ``c_proj`` start at zero, so every block starts as the identity. Value
        embeddings ~ N(0, 1), mixed in half and half; residual scalars 1, embedding scalars and
        skip weights 0 (the stream starts as without them).
        """
        nn.init.normal_(self.wte.weight, mean=0.0, std=1.0)
        for table in self.value_embeds:
            nn.init.normal_(cast(nn.Embedding, table).weight, mean=0.0, std=1.0)
        for scalar, value in self._scalar_inits():
            scalar.fill_(value)
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.001)
        for block in self.block_list():
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                s = math.sqrt(3.0 / lin.in_features)
                nn.init.uniform_(lin.weight, -s, s)
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_lambdas is not None:
                block.attn.ve_lambdas.fill_(0.5)
        cos, sin = rotary_tables(self.rotary_len, self.config.head_dim, device=self.cos.device)
        self.cos.copy_(cos)
        self.sin.copy_(sin)

    def _scalar_inits(self) -> list[tuple[nn.Parameter, float]]:
        pairs = [(self.resid_lambdas, 1.0), (self.x0_lambdas, 0.0), (self.skip_weights, 0.0)]
        return [(p, v) for p, v in pairs if p is not None]

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
        x = self._trunk(idx, T)
        if targets is None:
            return self._logits(x)
        if not self.fused_head:  # the plain path: whole fp32 logits, then cross-entropy
            logits = self._logits(x)
            return F.cross_entropy(
                logits.view(-1, logits.size(-1)),
                targets.reshape(-1),
                ignore_index=-1,
                reduction=loss_reduction,
            )
        head = self.lm_head.weight[: self.config.vocab_size]
        return head_loss(norm(x), head, targets, self.config.softcap, loss_reduction)

    def _trunk(
        self,
        idx: torch.Tensor,
        T: int,
        cache: KVCache | None = None,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The residual stream after the last block (before the final norm), over ``idx``
        alone or, with ``cache``, continuing its ``rows``. With autograd the blocks run their
        modules; without, :meth:`Block.infer`."""
        infer = not torch.is_grad_enabled()
        cos, sin = self._full_tables() if infer else (self.cos, self.sin)
        cached = None
        if cache is None:
            rotary = cos[:, :T], sin[:, :T]
        else:
            rotary, cached = begin_cached_pass(cache, idx, rows, cos, sin, self.rotary_len)
        x = x0 = norm(self.wte(idx))
        ves = self._value_embeddings(idx, infer)
        n = self.config.n_layer
        n_skip = 0 if self.skip_weights is None else self.skip_weights.numel()
        skips: list[torch.Tensor] = []
        resid, mixes, skip_weights = self._stream_scalars(infer)
        for i, block in enumerate(self.block_list()):
            if resid is not None and mixes is not None:
                x = resid[i] * x + mixes[i] * x0
            if skip_weights is not None and i >= n - n_skip:
                x = x + skip_weights[i - (n - n_skip)] * skips.pop()
            table = self.config.value_table(i)
            ve = None if table is None else ves[table]
            if infer:
                x = block.infer(x, rotary, self._weights, cached, ve)
            else:
                x = block(x, rotary, cached, ve)
            if i < n_skip:
                skips.append(x)
        return x

    def _value_embeddings(self, idx: torch.Tensor, infer: bool) -> list[torch.Tensor]:
        """Each value-embedding table's rows for ``idx``; without autograd all tables are
        read by one lookup in a side-by-side copy."""
        tables = [cast(nn.Embedding, t).weight for t in self.value_embeds]
        if not infer or len(tables) < 2:
            return [F.embedding(idx, table) for table in tables]
        rows = F.embedding(idx, self._weights.stacked(*tables, dim=1))
        return list(rows.split(tables[0].size(1), dim=-1))

    def _stream_scalars(self, infer: bool) -> tuple[Any, Any, Any]:
        """The residual, embedding-mix and skip scalars (None where off): the parameters, or
        without autograd their values as Python numbers (fewer operations per decode step)."""
        scalars = (self.resid_lambdas, self.x0_lambdas, self.skip_weights)
        if not infer:
            return scalars
        resid, mixes, skips = (None if p is None else self._weights.floats(p) for p in scalars)
        return resid, mixes, skips

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
        x = self._trunk(idx, T, cache, rows)
        cache.advance(T, rows)
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
            ``{"matrix": 2-D hidden weights (Muon), "embedding": [wte, value embeddings],
            "unembedding": [lm_head], "scalar": 0/1-D parameters (value-embedding mixes,
            residual and skip scalars)}``; together they hold every parameter exactly once.
        """
        matrix = [p for p in self.blocks.parameters() if p.ndim >= 2]
        scalar = [p for p in self.blocks.parameters() if p.ndim < 2]
        scalar += [p for p, _ in self._scalar_inits()]
        tables = [cast(nn.Parameter, cast(nn.Embedding, t).weight) for t in self.value_embeds]
        return {
            "matrix": matrix,
            "embedding": [cast(nn.Parameter, self.wte.weight), *tables],
            "unembedding": [cast(nn.Parameter, self.lm_head.weight)],
            "scalar": scalar,
        }

    def num_params(self) -> int:
        """Number of parameters (padded vocabulary rows included)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward) at ``sequence_len``, for MFU.

        ``6 * N + 12 * H * Dh * sum_l T_l``, where ``N`` counts the weights of every matrix
        multiply (all parameters except the token and value embeddings, which are lookups, and
        the scalars; the head's padded rows are included because they are computed): 2 FLOPs
        per weight per token forward, 4 backward. The second term is attention itself: per
        layer and token, ``Q K^T`` and ``A V`` each cost ``2 * H * Dh * T_l`` forward, times 3
        for forward + backward, where ``T_l`` is ``T`` or the layer's shorter window. As in
        the PaLM / nanoGPT convention the causal mask is not discounted, and norms, rotary,
        softmax and the softcap are not counted.
        """
        c = self.config
        groups = self.parameter_groups()
        lookups = [*groups["embedding"], *groups["scalar"]]
        n_matmul = self.num_params() - sum(p.numel() for p in lookups)
        spans = sum(min(c.window(i) or c.sequence_len, c.sequence_len) for i in range(c.n_layer))
        return 6 * n_matmul + 12 * c.n_head * c.head_dim * spans

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty generation cache of ``batch_size`` rows (``max_len`` <= ``max_context``)."""
        c = self.config
        max_len = max_len or self.rotary_len
        if max_len > self.rotary_len:
            raise ValueError(f"max_len={max_len} exceeds the model's context {self.rotary_len}")
        return KVCache(batch_size, c.n_kv_head, max_len, c.head_dim, c.n_layer)
