"""Where and how computation runs: device, dtype, autocast, torchrun/DDP set-up, seeding.

The runtime reads torchrun's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``); it uses NCCL
on GPUs and gloo on CPU. Only rank 0 prints and writes shared files.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from nanochat.core.errors import UsageError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def pick_device_type(requested: str = "auto") -> str:
    """``cuda`` if available, then ``mps``, then ``cpu``; or the requested one if it exists.

    Raises:
        UsageError: the requested device is unknown or not available on this machine.
    """
    if requested not in DEVICE_CHOICES:
        raise UsageError(f"unknown device {requested!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but no CUDA GPU is available")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps was requested but MPS is not available")
    return requested


def torchrun_env() -> tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` from torchrun's environment; ``(0, 0, 1)`` without it."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return (
            int(os.environ["RANK"]),
            int(os.environ.get("LOCAL_RANK", "0")),
            int(os.environ["WORLD_SIZE"]),
        )
    return 0, 0, 1


@dataclass
class Runtime:
    """The device, precision and process group a run uses."""

    device: torch.device
    dtype: torch.dtype
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def device_type(self) -> str:
        """``cuda``, ``mps`` or ``cpu``."""
        return self.device.type

    @property
    def distributed(self) -> bool:
        """True when running with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that prints and writes shared files."""
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on CUDA; a no-op elsewhere (fp32 on CPU)."""
        if self.device_type == "cuda" and self.dtype == torch.bfloat16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def print0(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on rank 0 only."""
        if self.is_main:
            print(*args, **kwargs)

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.distributed and dist.is_initialized():
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` in place across ranks and return it."""
        if self.distributed and dist.is_initialized():
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def synchronize(self) -> None:
        """Wait for queued device work (for honest timings)."""
        if self.device_type == "cuda":
            torch.cuda.synchronize(self.device)

    def shutdown(self) -> None:
        """Tear down the process group if this runtime created one."""
        if dist.is_initialized():
            dist.destroy_process_group()


def init_runtime(device: str = "auto", dtype: str = "auto") -> Runtime:
    """Choose device and dtype and, under torchrun, join the process group.

    Args:
        device: ``auto``, ``cuda``, ``mps`` or ``cpu``.
        dtype: ``auto`` (bf16 on CUDA, fp32 elsewhere), ``bfloat16`` or ``float32``.
    """
    rank, local_rank, world_size = torchrun_env()
    device_type = pick_device_type(device)
    if device_type == "cuda":
        torch_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(torch_device)
    else:
        torch_device = torch.device(device_type)
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device_type == "cuda" else torch.float32
    elif dtype in ("bfloat16", "bf16"):
        torch_dtype = torch.bfloat16
    elif dtype in ("float32", "fp32"):
        torch_dtype = torch.float32
    else:
        raise UsageError(f"unknown dtype {dtype!r}; choose auto, bfloat16 or float32")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            dist.init_process_group(backend=backend, device_id=torch_device)
        else:
            dist.init_process_group(backend=backend)
    return Runtime(torch_device, torch_dtype, rank, local_rank, world_size)


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python, torch (CPU and CUDA) with ``seed + rank`` for reproducible runs."""
    value = seed + rank
    random.seed(value)
    torch.manual_seed(value)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(value)


@contextlib.contextmanager
def runtime_session(device: str = "auto", dtype: str = "auto") -> Iterator[Runtime]:
    """A runtime for a ``with`` block, shutting the process group down at the end."""
    runtime = init_runtime(device, dtype)
    try:
        yield runtime
    finally:
        runtime.shutdown()
