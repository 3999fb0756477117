"""The built-in ``llama`` model plugin: a Llama-architecture transformer, with import of
pretrained weights (GGUF files, Hugging Face folders) and export to both formats.

Import :mod:`nanochat.plugins.llama.options` for the options alone (no torch); the model lives
in :mod:`.model`, the factory in :mod:`.factory`.
"""

from __future__ import annotations

from nanochat.plugins.llama.options import LlamaOptions

__all__ = ["LlamaOptions"]
