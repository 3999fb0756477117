"""nanochat's special tokens: every tokenizer plugin carries these, in this order."""

from __future__ import annotations

BOS = "<|bos|>"
USER_START = "<|user_start|>"
USER_END = "<|user_end|>"
ASSISTANT_START = "<|assistant_start|>"
ASSISTANT_END = "<|assistant_end|>"
PYTHON_START = "<|python_start|>"
PYTHON_END = "<|python_end|>"
OUTPUT_START = "<|output_start|>"
OUTPUT_END = "<|output_end|>"

SPECIAL_TOKENS: tuple[str, ...] = (
    BOS,
    USER_START,
    USER_END,
    ASSISTANT_START,
    ASSISTANT_END,
    PYTHON_START,
    PYTHON_END,
    OUTPUT_START,
    OUTPUT_END,
)

# Optional: a tokenizer that has both renders system messages between them; one that lacks them
# merges a system message into the first user turn.
SYSTEM_START = "<|system_start|>"
SYSTEM_END = "<|system_end|>"
