"""A byte-level BPE tokenizer from the vocabulary and merges a GGUF file carries.

GGUF stores ``tokenizer.ggml.tokens`` (every token by id, in the byte-to-unicode alphabet of
GPT-2), ``tokenizer.ggml.token_type`` (3 = control: the special tokens), ``tokenizer.ggml.merges``
(``"a b"`` in rank order) and ``tokenizer.ggml.pre``, the name of the pre-tokenizer (the regexes
that split text before BPE). Each known name maps to the HF pre-tokenizer of the model family.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nanochat.plugins.tokenizers.rustbpe_adapter import TokenizerFileError

CONTROL = 3  # GGUF token type of special (control) tokens
# Digits one by one, then GPT-2's split: the SmolLM / StarCoder family.
DIGITS_THEN_GPT2 = ("smollm", "starcoder", "refact", "codeshell", "command-r", "minerva")
GPT2 = ("gpt2", "gpt-2", "default", "")
LLAMA3 = ("llama-bpe", "llama3", "llama-v3")
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _pre_tokenizer(name: str, pattern: str | None = None) -> Any:
    from tokenizers import Regex, pre_tokenizers

    if name == "nanochat" and pattern:  # written by nanochat's GGUF export of a trained BPE
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if name in DIGITS_THEN_GPT2:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if name in GPT2:
        return byte_level
    if name in LLAMA3:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    known = ", ".join(n for n in (*DIGITS_THEN_GPT2, *GPT2, *LLAMA3) if n)
    raise TokenizerFileError(f"GGUF pre-tokenizer {name!r} is not supported (known: {known})")


def pre_tokenizer_name(pre: dict[str, Any] | None) -> str:
    """The GGUF ``tokenizer.ggml.pre`` name of a HF pre-tokenizer (its JSON), best effort."""
    if not pre:
        return "default"
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    types = [p.get("type") for p in parts]
    if types[:1] == ["Digits"]:
        return "smollm"
    if types[:1] == ["Split"]:
        return "llama-bpe"
    return "gpt-2"


def tokenizer_from_gguf(
    tokens: Sequence[str],
    token_types: Sequence[int],
    merges: Sequence[str],
    pre: str,
    pattern: str | None = None,
) -> tuple[Any, dict[str, int]]:
    """The HF tokenizer of a GGUF vocabulary and its special (control) tokens by text
    (``pattern``: the split regex of pre-tokenizer ``nanochat``).

    Raises:
        TokenizerFileError: an unknown pre-tokenizer or a vocabulary HF refuses.
    """
    from tokenizers import Tokenizer, decoders, models

    specials = {
        t: i for i, (t, kind) in enumerate(zip(tokens, token_types, strict=True)) if kind == CONTROL
    }
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = []
    for merge in merges:
        left, _, right = merge.partition(" ")
        pairs.append((left, right))
    try:
        hf = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False))
    except Exception as exc:  # noqa: BLE001 - HF raises plain Exceptions for bad vocabularies
        raise TokenizerFileError(f"the GGUF vocabulary is not a valid BPE: {exc}") from None
    hf.pre_tokenizer = _pre_tokenizer(pre, pattern)
    hf.decoder = decoders.ByteLevel()
    return hf, specials
