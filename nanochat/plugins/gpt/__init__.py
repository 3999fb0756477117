"""The built-in ``gpt`` model plugin: a nanochat-style GPT trained with Muon + AdamW.

Import :mod:`nanochat.plugins.gpt.options` for the options alone (no torch); the model lives in
:mod:`.model`, the factory in :mod:`.factory`.
"""

from __future__ import annotations

from nanochat.plugins.gpt.options import GPTOptions

__all__ = ["GPTOptions"]
