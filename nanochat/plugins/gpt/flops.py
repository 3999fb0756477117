"""Peak throughput of accelerators (for MFU) and a measurement of this CPU's matmul peak."""

from __future__ import annotations

import time

import torch

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


def measure_cpu_matmul_flops(
    size: int = 1024, dtype: torch.dtype = torch.float32, seconds: float = 1.0
) -> float:
    """Measure this CPU's matmul throughput with square ``size x size`` matrices.

    Runs ``C = A @ B`` repeatedly (into a preallocated output) for about ``seconds`` after a
    warm-up and counts ``2 * size³`` FLOPs per multiply. Uses the current
    ``torch.get_num_threads()``.

    Args:
        size: matrix side.
        dtype: element type (fp32 is what CPU training runs in).
        seconds: how long to measure.

    Returns:
        The best FLOP/s seen over short windows (the attainable peak).
    """
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    out = torch.empty(size, size, dtype=dtype)
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
