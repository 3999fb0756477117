"""The compiled CPU kernels of ``nanochat-kernels`` (Rust), when installed: single-token
attention over the KV cache (:mod:`.cpu_attention`) and products of a few rows with weights in
column panels (:mod:`.infer_linear`). Without them, or with :data:`ENABLED` off, decode steps
run on torch's operations alone (same results up to rounding)."""

from __future__ import annotations

from types import ModuleType

compiled: ModuleType | None
try:
    import nanochat_kernels as compiled
except ImportError:  # a platform without the compiled kernels
    compiled = None

# Set False to run every decode step on torch's operations alone (comparisons: benchmarks, tests).
ENABLED = True


def available() -> bool:
    """Whether the kernels are installed and switched on."""
    return compiled is not None and ENABLED
