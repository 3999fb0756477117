"""nanochat_rustbpe: a byte-level BPE tokenizer written in Rust.

Training and encoding release the GIL and run on all cores. Encoding gives the same ids as
``tiktoken`` built from :meth:`Tokenizer.to_tiktoken_ranks` and :attr:`Tokenizer.pattern`.
"""

from __future__ import annotations

from nanochat_rustbpe._rustbpe import DEFAULT_PATTERN, MAX_VOCAB_SIZE, Tokenizer

__all__ = ["DEFAULT_PATTERN", "MAX_VOCAB_SIZE", "Tokenizer"]
