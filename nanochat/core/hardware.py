"""Hardware facts for honest throughput numbers: peak FLOP/s and model FLOPs utilisation (MFU).

GPUs: the vendors' dense bf16 peaks (a table). CPUs: this machine's fp32 matmul throughput,
measured once per process (or set with ``NANOCHAT_CPU_PEAK_FLOPS`` / :func:`set_cpu_peak_flops`,
which tests use). Stages, benchmarks and reports all compute MFU with :func:`mfu`.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

# Dense (no 2:4 sparsity) bf16 tensor-core peak FLOP/s from the vendors' data sheets.
PEAK_BF16_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "A6000": 155e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,  # fp16 (no bf16 on Volta)
    "T4": 65e12,  # fp16 (no bf16 on Turing)
}
ENV_CPU_PEAK = "NANOCHAT_CPU_PEAK_FLOPS"

_lock = threading.Lock()
_cpu_peak: float | None = None


def peak_flops(device_name: str) -> float | None:
    """Peak dense bf16 FLOP/s of a GPU named like ``torch.cuda.get_device_name()``.

    Matching is by substring of the upper-cased name, longest key first. CUDA names an SXM
    H100 ``"NVIDIA H100 80GB HBM3"`` (no "SXM"), so an H100 that is neither PCIe nor NVL
    counts as SXM.

    Args:
        device_name: the device name reported by CUDA.

    Returns:
        FLOP/s, or None for an unknown device.
    """
    name = device_name.upper()
    if "H100" in name and "PCIE" not in name and "NVL" not in name and "GH200" not in name:
        return PEAK_BF16_FLOPS["H100 SXM"]
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
        if key.upper() in name:
            return PEAK_BF16_FLOPS[key]
    return None


def measure_cpu_matmul_flops(size: int = 1024, seconds: float = 1.0) -> float:
    """Measure this CPU's fp32 matmul throughput with square ``size x size`` matrices.

    Runs ``C = A @ B`` into a preallocated output for about ``seconds`` after a warm-up,
    counting ``2 * size³`` FLOPs per product, with the current ``torch.get_num_threads()``.

    Returns:
        The best FLOP/s seen over windows of ~0.1 s (the attainable peak).
    """
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    out = torch.empty(size, size)
    for _ in range(3):
        torch.matmul(a, b, out=out)
    flops_per = 2.0 * size**3
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        n = 0
        t0 = time.perf_counter()
        while True:
            torch.matmul(a, b, out=out)
            n += 1
            dt = time.perf_counter() - t0
            if dt > 0.1:
                break
        best = max(best, n * flops_per / dt)
    return best


def set_cpu_peak_flops(value: float | None) -> None:
    """Fix the CPU peak used for MFU (None: measure again on next use)."""
    global _cpu_peak
    if value is not None and not value > 0:
        raise ValueError(f"a peak of {value} FLOP/s is not positive")
    with _lock:
        _cpu_peak = value


def cpu_peak_flops() -> float:
    """This CPU's fp32 matmul peak: ``$NANOCHAT_CPU_PEAK_FLOPS``, else measured once per process."""
    global _cpu_peak
    with _lock:
        if _cpu_peak is None:
            env = os.environ.get(ENV_CPU_PEAK)
            _cpu_peak = float(env) if env else measure_cpu_matmul_flops(seconds=0.75)
        return _cpu_peak


def raise_cpu_peak(observed: float) -> float:
    """Raise the CPU peak to ``observed`` FLOP/s when a model ran faster than the measured peak.

    A peak measured while other processes held the cores is no peak; the model proved more is
    attainable, so MFU on CPU never exceeds 100%.
    """
    global _cpu_peak
    with _lock:
        _cpu_peak = max(_cpu_peak or 0.0, observed)
        return _cpu_peak


def device_peak_flops(runtime: Any) -> tuple[float, str]:
    """``(peak FLOP/s, where it comes from)`` of the runtime's device (per process)."""
    if runtime.device_type == "cuda":
        import torch

        name = torch.cuda.get_device_name(runtime.device)
        peak = peak_flops(name)
        if peak:
            return peak, f"{name} bf16 table"
    return cpu_peak_flops(), "measured CPU fp32 matmul"


def mfu(
    flops_per_token: float, tokens_per_second: float, peak: float, world_size: int = 1
) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak of ``world_size`` devices."""
    if peak <= 0:
        return 0.0
    return flops_per_token * tokens_per_second / (peak * world_size)
