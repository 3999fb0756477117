"""The output head and its loss, fused and computed in chunks of rows.

The plain path ``cross_entropy(softcap(norm(x) @ W^T))`` materialises the ``(tokens, vocab)``
logits in fp32 several times over (the logits, the capped logits, the log-softmax, and as many
gradients in the backward pass): at vocab 32,768 and 2,048 tokens each copy is 256 MB, and on a
CPU streaming them through memory costs more than the head's matrix multiply. Here the head, the
soft-cap and the cross-entropy run on ``chunk`` rows at a time, so each chunk's logits stay in
cache and are dropped before the next chunk.

When the loss is reduced to a scalar (``mean`` or ``sum``) its gradient with respect to the
logits is ``softmax - onehot`` times one number, known in the forward pass up to that number.
So the forward pass also computes, chunk by chunk, the gradients of the input rows and of ``W``
for an upstream gradient of 1, and the backward pass only scales them: the same three matrix
multiplies as the plain path, no recomputation, and no ``(tokens, vocab)`` tensor at all.
``loss_reduction="none"`` with gradients (rare: a per-token weighted loss) uses the plain path.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

#: Logit elements one chunk may hold, by device type: 256 MB of fp32 on a CPU, 1 GB on a GPU.
#: Chunks must keep many rows: every chunk reads the head's whole weight again (32 MB at vocab
#: 32,768 and width 256) in each of its three matrix multiplies, and small ones run slowly; on
#: a 2-core CPU 2,048 rows were faster than 128-512 (measured), so a CPU batch of a few thousand
#: tokens is one chunk and the gain there is in passes over memory, not in chunking.
CHUNK_ELEMENTS = {"cpu": 1 << 26, "cuda": 1 << 28}
DEFAULT_CHUNK_ELEMENTS = 1 << 24
#: exp(60) * 2**24 rows of vocabulary is far below the fp32 maximum (3.4e38)
MAX_UNSHIFTED_CAP = 60.0


def chunk_rows(device: torch.device, vocab: int) -> int:
    """Rows of one chunk for a head of ``vocab`` rows on ``device``."""
    elements = CHUNK_ELEMENTS.get(device.type, DEFAULT_CHUNK_ELEMENTS)
    return max(16, elements // max(1, vocab))


def matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the head's matrix multiplies run in: autocast's when it is on, else ``x``'s."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def capped_logits(x: torch.Tensor, weight: torch.Tensor, softcap: float) -> torch.Tensor:
    """fp32 logits ``softcap * tanh(x W^T / softcap)`` (no cap when ``softcap`` is 0)."""
    logits = F.linear(x, weight).float()
    if softcap > 0:
        logits = softcap * torch.tanh(logits / softcap)
    return logits


def _chunk_loss(
    x: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    softcap: float,
    with_grad: bool,
    buffers: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-row losses of one chunk and, when asked, ``d(loss)/d(logits before the cap)``
    (zero on rows whose target is -1). ``x`` and ``weight`` are already in the matmul dtype;
    ``buffers`` (two fp32 tensors of at least ``rows x vocab``) are reused between chunks, so
    a large chunk is not allocated (and page-faulted in) again and again."""
    rows, vocab = x.size(0), weight.size(0)
    if buffers is None:
        logits = F.linear(x, weight).float()
        slope_buf = None
    else:
        logits = buffers[0][: rows * vocab].view(rows, vocab)
        slope_buf = buffers[1][: rows * vocab].view(rows, vocab)
        if x.dtype == torch.float32:
            torch.mm(x, weight.t(), out=logits)
        else:
            logits.copy_(x @ weight.t())
    slope = None
    if softcap > 0:
        tanh = logits.div_(softcap).tanh_()
        if with_grad:  # d(cap * tanh(z / cap))/dz = 1 - tanh^2
            one = torch.ones((), dtype=tanh.dtype, device=tanh.device)
            slope = torch.addcmul(one, tanh, tanh, value=-1.0, out=slope_buf)
        logits = tanh.mul_(softcap)
    valid = targets >= 0
    safe = targets.clamp(min=0)
    picked = logits.gather(1, safe[:, None]).squeeze(1)
    # softmax in place of the logits; capped logits lie in [-cap, cap], so for a cap up to
    # MAX_UNSHIFTED_CAP exp cannot overflow and needs no row maximum subtracted
    bounded = 0 < softcap <= MAX_UNSHIFTED_CAP
    shift = None if bounded else logits.amax(dim=-1, keepdim=True)
    exp = logits.exp_() if shift is None else logits.sub_(shift).exp_()
    total = exp.sum(dim=-1, keepdim=True)
    lse = total.log().squeeze(1)
    if shift is not None:
        picked = picked - shift.squeeze(1)
    loss = torch.where(valid, lse - picked, 0.0)
    if not with_grad:
        return loss, None
    grad = exp.div_(total)
    grad.scatter_add_(1, safe[:, None], torch.full_like(total, -1.0))
    if grad.is_cuda or not bool(valid.all()):  # no host sync on a GPU: always mask
        grad.mul_(valid[:, None])
    if slope is not None:
        grad.mul_(slope)
    return loss, grad


class FusedHeadLoss(torch.autograd.Function):
    """Head + soft-cap + cross-entropy summed over rows, with gradients made in the forward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        softcap: float,
        rows: int,
    ) -> torch.Tensor:
        """Summed loss of ``x`` (``N, C``) against ``targets`` (``N``) under head ``weight``."""
        dtype = matmul_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            w = weight.to(dtype)
            total = torch.zeros((), dtype=torch.float32, device=x.device)
            size = min(rows, x.size(0)) * weight.size(0)
            buffers = (
                x.new_empty(size, dtype=torch.float32),
                x.new_empty(size, dtype=torch.float32),
            )
            grad_x = torch.empty(x.shape, dtype=dtype, device=x.device)
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            for start in range(0, x.size(0), rows):
                xc = x[start : start + rows].to(dtype)
                tc = targets[start : start + rows]
                loss, grad = _chunk_loss(xc, w, tc, softcap, True, buffers)
                assert grad is not None
                total += loss.sum()
                g = grad.to(dtype)
                torch.mm(g, w, out=grad_x[start : start + rows])
                if dtype == torch.float32:
                    grad_w.addmm_(g.t(), xc)
                else:
                    grad_w += (g.t() @ xc).float()
        ctx.save_for_backward(grad_x, grad_w)
        ctx.dtypes = (x.dtype, weight.dtype)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        """Scale the gradients made in the forward pass by the upstream gradient."""
        grad_x, grad_w = ctx.saved_tensors
        x_dtype, w_dtype = ctx.dtypes
        gx = (grad_x * grad_out).to(x_dtype) if ctx.needs_input_grad[0] else None
        gw = (grad_w * grad_out).to(w_dtype) if ctx.needs_input_grad[1] else None
        return gx, gw, None, None, None


def head_loss(
    x: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    softcap: float,
    reduction: str = "mean",
    rows: int | None = None,
) -> torch.Tensor:
    """Cross-entropy of ``softcap(x @ weight^T)`` against ``targets``, chunked over rows.

    Args:
        x: normalised final hidden states ``(..., C)``.
        weight: the head's rows for the real vocabulary ``(V, C)`` (padding rows cut off).
        targets: ids ``(...)``; ``-1`` carries no loss.
        softcap: logit soft-cap; 0 disables it.
        reduction: ``mean`` (over targets with a loss), ``sum`` or ``none`` (shape ``(N,)``).
        rows: rows per chunk (default: :func:`chunk_rows` for the device).

    Returns:
        The loss, equal within float rounding to the plain path's.
    """
    x = x.reshape(-1, x.size(-1))
    targets = targets.reshape(-1)
    rows = rows or chunk_rows(x.device, weight.size(0))
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if reduction == "none" and needs_grad:
        logits = capped_logits(x, weight, softcap)
        return F.cross_entropy(logits, targets, ignore_index=-1, reduction="none")
    if needs_grad:
        total = FusedHeadLoss.apply(x, weight, targets, softcap, rows)
    else:
        with torch.no_grad():
            per_row = torch.cat(
                [
                    _chunk_loss(x[s : s + rows], weight, targets[s : s + rows], softcap, False)[0]
                    for s in range(0, x.size(0), rows)
                ]
            )
        if reduction == "none":
            return per_row
        total = per_row.sum()
    if reduction == "sum":
        return total
    return total / (targets >= 0).sum()
