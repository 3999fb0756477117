"""The checks every tokenizer plugin must pass, reusable by third-party plugins.

Each function takes a tokenizer factory (what a tokenizer spec's factory returns) or a trained
tokenizer and raises ``AssertionError`` when the contract is broken.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nanochat.core.special_tokens import BOS, SPECIAL_TOKENS

SAMPLE_TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Numbers like 12345 and 3.14159 appear in text; so do emoji 🙂 and 汉字.",
    "  leading spaces, trailing spaces   \n\nand\r\nnew lines\t tabs",
    "e\u0301 combining marks, ﬁ ligatures, and Ünïcödé.",
    "",
]


def train_small(factory: Any, vocab_size: int = 300) -> Any:
    """A tokenizer trained on :data:`SAMPLE_TEXTS` repeated (fast, for contract checks)."""
    return factory.train(SAMPLE_TEXTS * 20, vocab_size, list(SPECIAL_TOKENS))


def check_round_trip(tokenizer: Any, texts: list[str] = SAMPLE_TEXTS) -> None:
    """``decode(encode(t)) == t`` for every text, alone and batched."""
    for text in texts:
        assert tokenizer.decode(tokenizer.encode(text)) == text, text
    batched = tokenizer.encode_batch(texts)
    assert batched == [tokenizer.encode(t) for t in texts]


def check_special_tokens(tokenizer: Any) -> None:
    """Every nanochat special token has a distinct id, used only when allowed."""
    special = tokenizer.special_tokens
    assert set(SPECIAL_TOKENS) <= set(special)
    assert len({special[name] for name in SPECIAL_TOKENS}) == len(SPECIAL_TOKENS)
    text = f"before {BOS} after"
    plain = tokenizer.encode(text)
    assert special[BOS] not in plain
    assert tokenizer.decode(plain) == text
    allowed = tokenizer.encode(text, allowed_special="all")
    assert special[BOS] in allowed
    assert tokenizer.encode(text, allowed_special={BOS}) == allowed


def check_token_bytes(tokenizer: Any) -> None:
    """``token_bytes`` has one entry per id, 0 exactly for special tokens, and sums right."""
    lengths = tokenizer.token_bytes()
    assert len(lengths) == tokenizer.vocab_size
    special_ids = set(tokenizer.special_tokens.values())
    for index, length in enumerate(lengths):
        assert (length == 0) == (index in special_ids), index
    for text in SAMPLE_TEXTS:
        ids = tokenizer.encode(text)
        assert sum(lengths[i] for i in ids) == len(text.encode("utf-8"))


def check_save_load(factory: Any, tokenizer: Any, directory: Path) -> None:
    """A saved tokenizer loads back and encodes identically."""
    tokenizer.save(directory)
    loaded = factory.load(directory)
    assert loaded.vocab_size == tokenizer.vocab_size
    assert loaded.special_tokens == tokenizer.special_tokens
    for text in SAMPLE_TEXTS:
        assert loaded.encode(text) == tokenizer.encode(text)
