"""Options of the built-in tokenizers (no heavy imports, so listing them stays fast)."""

from __future__ import annotations

from dataclasses import dataclass

# nanochat's GPT-4-style split pattern, with numbers in groups of at most two digits.
DEFAULT_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)


@dataclass
class TokenizerOptions:
    """Options shared by the BPE tokenizer plugins.

    Attributes:
        pattern: the regex that splits text before BPE; empty: nanochat's default pattern.
    """

    pattern: str = ""
