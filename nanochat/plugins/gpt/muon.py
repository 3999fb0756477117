"""Muon: momentum orthogonalised by a Newton-Schulz iteration (Keller Jordan et al., 2024).

For each 2-D weight ``W`` with gradient ``G``, Muon keeps a momentum buffer ``M``, forms the
Nesterov update ``U = G + mu * (M - G)`` (after ``M <- mu M + (1 - mu) G``), replaces ``U`` by
its nearest semi-orthogonal matrix ``O ≈ U (U^T U)^{-1/2}`` (all singular values pushed towards 1)
and steps ``W <- W - lr * sqrt(max(1, rows / cols)) * O``.

Orthogonalisation uses five steps of a quintic Newton-Schulz iteration,
``X <- a X + (b A + c A^2) X`` with ``A = X X^T``, on ``X = U / ||U||_F``. The coefficients
``(a, b, c)`` are tuned so that small singular values grow fast; the result has singular values
roughly in ``[0.7, 1.2]`` rather than exactly 1, which is what Muon needs. It runs in bf16 on
CUDA (fast and good enough) and in fp32 elsewhere (CPUs have no fast bf16 matmul). Parameters
of one shape are orthogonalised together, as one batch, with fused multiply-adds
(``addmm``/``baddbmm``): on CPU this is several times faster than one matrix at a time.

Under DDP: gradients are all-reduced (averaged) by DDP during ``backward()``, so every rank holds
the same gradient and the same momentum. With ``world_size > 1`` and a process group, the
Newton-Schulz work is sharded: the matrices of one shape are split into equal shares (padded
with zero matrices), each rank orthogonalises its share, and one all-gather gives every rank
every result; each rank then applies the same updates, so replicas stay identical and the
momentum buffers (and so checkpoints) are the same on every rank. With ``world_size`` 1 every
rank would repeat all the work, which is also what happens without a process group.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


@torch.no_grad()
def zeropower_via_newtonschulz5(G: Tensor, steps: int = 5) -> Tensor:
    """Approximately orthogonalise ``G`` (the ``U V^T`` of its SVD) by Newton-Schulz.

    Args:
        G: a matrix, or a batch of matrices ``(n, rows, cols)``.
        steps: iterations of the quintic.

    Returns:
        A matrix of ``G``'s shape whose singular values are close to 1 (bf16 on CUDA, fp32
        otherwise).
    """
    a, b, c = NS_COEFFICIENTS
    X = G.bfloat16() if G.is_cuda else G.float()
    transposed = X.size(-2) > X.size(-1)
    if transposed:  # work with the wide orientation: A = X X^T is the smaller Gram matrix
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm <= Frobenius norm <= 1
    X = X.contiguous()
    fma = torch.baddbmm if X.ndim == 3 else torch.addmm  # fused: beta * input + alpha * (m1 @ m2)
    for _ in range(steps):
        A = X @ X.mT
        B = fma(A, A, A, beta=b, alpha=c)  # b A + c A²
        X = fma(X, B, X, beta=a)  # a X + B X
    return X.mT if transposed else X


class Muon(torch.optim.Optimizer):
    """Muon for 2-D parameters (the hidden weight matrices).

    Args:
        params: 2-D parameters or parameter groups.
        lr: learning rate (in units of the orthogonalised update's spectral norm).
        momentum: momentum coefficient ``mu``.
        nesterov: use the Nesterov form of momentum.
        ns_steps: Newton-Schulz iterations.
        weight_decay: decoupled weight decay (``W <- W * (1 - lr * wd)``).
        world_size: data-parallel ranks holding identical gradients (DDP); above 1, with a
            process group of that size, the orthogonalisation is sharded across them.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        weight_decay: float = 0.0,
        world_size: int = 1,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            weight_decay=weight_decay,
        )
        super().__init__(params, defaults)
        self.defaults["world_size"] = world_size  # not a group setting (saved state unchanged)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon takes 2-D parameters only, got shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        """Take one optimisation step.

        Args:
            closure: optional callable that re-evaluates the loss and returns it.

        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            by_shape: dict[tuple[int, ...], list[Tensor]] = {}
            for p in group["params"]:
                if p.grad is not None:
                    by_shape.setdefault(tuple(p.shape), []).append(p)
            for params in by_shape.values():
                self._step_same_shape(group, params)
        return loss

    def _step_same_shape(self, group: dict, params: list[Tensor]) -> None:
        """Update parameters of one shape together: one batched Newton-Schulz for all of them."""
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        updates = []
        for p in params:
            grad = p.grad
            assert grad is not None  # the caller passes only parameters with gradients
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(grad)
            buf = state["momentum_buffer"]
            buf.lerp_(grad, 1 - mu)
            updates.append(grad.lerp(buf, mu) if group["nesterov"] else buf)
        ortho = self._orthogonalise(torch.stack(updates), group["ns_steps"])
        rows, cols = params[0].shape
        scale = max(1.0, rows / cols) ** 0.5
        for p, o in zip(params, ortho.unbind(0), strict=True):
            if wd:
                p.mul_(1 - lr * wd)
            p.add_(o.to(p.dtype), alpha=-lr * scale)

    def _orthogonalise(self, stacked: Tensor, steps: int) -> Tensor:
        """Newton-Schulz of a stack of same-shape updates, sharded across ranks when sharding."""
        world = int(self.defaults.get("world_size", 1))
        if world <= 1 or not dist.is_available() or not dist.is_initialized():
            return zeropower_via_newtonschulz5(stacked, steps=steps)
        if dist.get_world_size() != world:
            raise RuntimeError(
                f"Muon expects {world} ranks, the process group has {dist.get_world_size()}"
            )
        n = stacked.size(0)
        per = -(-n // world)
        if per * world > n:  # zero matrices pad the last share (they orthogonalise to zero)
            pad = stacked.new_zeros((per * world - n, *stacked.shape[1:]))
            stacked = torch.cat([stacked, pad])
        rank = dist.get_rank()
        mine = zeropower_via_newtonschulz5(stacked[rank * per : (rank + 1) * per], steps=steps)
        shares = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(shares, mine.contiguous())
        return torch.cat(shares)[:n]
