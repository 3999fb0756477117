"""The `hf-bpe` tokenizer plugin: byte-level BPE trained and run by HF `tokenizers`.

Special tokens are kept by this adapter, not added to the HF model, so that text containing
``<|bos|>`` stays text unless the caller allows special tokens (HF would always match them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

from nanochat.core.special_tokens import BOS
from nanochat.plugins.tokenizers.options import DEFAULT_SPLIT_PATTERN, TokenizerOptions
from nanochat.plugins.tokenizers.rustbpe_adapter import (
    TokenizerFileError,
    check_meta,
    check_vocab_size,
    write_meta,
)

HF_FILE = "hf_tokenizer.json"
SPECIALS_FILE = "special_tokens.json"


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    from tokenizers import pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    # ByteLevel maps bytes to printable characters: printable ASCII/Latin-1 map to themselves,
    # the remaining bytes to U+0100 upwards, in byte order.
    mapping: dict[str, int] = {}
    printable = [b for b in range(256) if chr(b) in alphabet]
    others = [b for b in range(256) if chr(b) not in alphabet]
    for b in printable:
        mapping[chr(b)] = b
    for offset, b in enumerate(others):
        mapping[chr(256 + offset)] = b
    return mapping


class HFBPETokenizer:
    """A HF `tokenizers` BPE plus nanochat's special tokens (ids after the HF vocabulary)."""

    implementation = "hf-bpe"

    def __init__(self, hf_tokenizer, special_tokens: dict[str, int]):  # noqa: ANN001
        self.hf = hf_tokenizer
        self._special = dict(special_tokens)
        self._special_re = (
            re.compile("|".join(re.escape(s) for s in sorted(self._special, key=len, reverse=True)))
            if self._special
            else None
        )

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return self.hf.get_vocab_size() + len(self._special)

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token name to id."""
        return dict(self._special)

    @property
    def bos_id(self) -> int:
        """The id of ``<|bos|>``."""
        return self._special[BOS]

    def _allowed(self, allowed_special: str | set[str] | None) -> set[str]:
        if allowed_special == "all":
            return set(self._special)
        return set(allowed_special or ())

    def encode(self, text: str, allowed_special: str | set[str] | None = None) -> list[int]:
        """Encode one text; special tokens become ids only when allowed."""
        return self.encode_batch([text], allowed_special)[0]

    def encode_batch(
        self, texts: list[str], allowed_special: str | set[str] | None = None
    ) -> list[list[int]]:
        """Encode many texts (HF parallelises the batch)."""
        allowed = self._allowed(allowed_special)
        if not allowed or self._special_re is None:
            return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]
        return [self._encode_with_specials(text, allowed) for text in texts]

    def _encode_with_specials(self, text: str, allowed: set[str]) -> list[int]:
        ids: list[int] = []
        start = 0
        assert self._special_re is not None
        for match in self._special_re.finditer(text):
            if match.group(0) not in allowed:
                continue
            if match.start() > start:
                ids += self.hf.encode(text[start : match.start()], add_special_tokens=False).ids
            ids.append(self._special[match.group(0)])
            start = match.end()
        if start < len(text):
            ids += self.hf.encode(text[start:], add_special_tokens=False).ids
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to text (special tokens rendered by name)."""
        by_id = {v: k for k, v in self._special.items()}
        out: list[str] = []
        run: list[int] = []
        for i in ids:
            if i in by_id:
                if run:
                    out.append(self.hf.decode(run, skip_special_tokens=False))
                    run = []
                out.append(by_id[i])
            else:
                run.append(i)
        if run:
            out.append(self.hf.decode(run, skip_special_tokens=False))
        return "".join(out)

    def token_bytes(self) -> list[int]:
        """Byte length of every id; 0 for special tokens."""
        to_byte = _unicode_to_byte()
        lengths = [0] * self.vocab_size
        for token, index in self.hf.get_vocab().items():
            lengths[index] = sum(1 for ch in token if ch in to_byte)
        return lengths

    def save(self, directory: Path) -> None:
        """Write the HF tokenizer and the special tokens into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.hf.save(str(directory / HF_FILE))
        (directory / SPECIALS_FILE).write_text(json.dumps(self._special) + "\n")
        write_meta(directory, self.implementation, self.vocab_size)


class HFBPEFactory:
    """Trains and loads :class:`HFBPETokenizer` objects."""

    def __init__(self, options: TokenizerOptions):
        self.options = options

    def _new_tokenizer(self):  # noqa: ANN202
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

        tokenizer = Tokenizer(models.BPE(byte_fallback=False))
        pattern = self.options.pattern or DEFAULT_SPLIT_PATTERN
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tokenizer.decoder = decoders.ByteLevel()
        return tokenizer

    def train(
        self,
        texts: Iterable[str],
        vocab_size: int,
        special_tokens: list[str],
        progress: Callable[[int, int], None] | None = None,
    ) -> HFBPETokenizer:
        """Train on ``texts`` to ``vocab_size`` ids, special tokens included."""
        from tokenizers import pre_tokenizers, trainers

        check_vocab_size(vocab_size, special_tokens)
        base = vocab_size - len(special_tokens)
        tokenizer = self._new_tokenizer()
        trainer = trainers.BpeTrainer(
            vocab_size=base,
            min_frequency=0,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        if progress is not None:
            progress(base, base)
        size = tokenizer.get_vocab_size()
        return HFBPETokenizer(tokenizer, {s: size + i for i, s in enumerate(special_tokens)})

    def load(self, directory: Path) -> HFBPETokenizer:
        """Load a tokenizer saved with :meth:`HFBPETokenizer.save`."""
        from tokenizers import Tokenizer

        directory = Path(directory)
        check_meta(directory, HFBPETokenizer.implementation)
        try:
            hf = Tokenizer.from_file(str(directory / HF_FILE))
            special = json.loads((directory / SPECIALS_FILE).read_text())
        except Exception as exc:  # noqa: BLE001 - HF raises plain Exceptions for bad files
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise TokenizerFileError(
                f"cannot load HF tokenizer from {directory}: {first}"
            ) from None
        return HFBPETokenizer(hf, special)
