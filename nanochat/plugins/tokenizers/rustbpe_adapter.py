"""The `rustbpe` tokenizer plugin: nanochat's Rust BPE behind the core Tokenizer contract."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterable
from pathlib import Path

import nanochat_rustbpe

from nanochat.core.errors import NanochatError, UsageError
from nanochat.core.special_tokens import BOS
from nanochat.plugins.tokenizers.options import TokenizerOptions

TOKENIZER_FILE = "tokenizer.rbpe"
META_FILE = "tokenizer.json.meta"


class TokenizerFileError(NanochatError):
    """A tokenizer folder or file that is missing, truncated or of another kind."""


def write_meta(directory: Path, implementation: str, vocab_size: int) -> None:
    """Record which implementation saved a tokenizer folder."""
    (directory / META_FILE).write_text(
        json.dumps({"implementation": implementation, "vocab_size": vocab_size}) + "\n"
    )


def check_meta(directory: Path, implementation: str) -> None:
    """Fail clearly when ``directory`` holds no tokenizer or another implementation's one."""
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise TokenizerFileError(f"{directory} holds no saved tokenizer ({META_FILE} is missing)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise TokenizerFileError(f"tokenizer metadata {meta_path} is corrupt") from None
    if meta.get("implementation") != implementation:
        raise TokenizerFileError(
            f"{directory} holds a {meta.get('implementation')!r} tokenizer, not {implementation!r};"
            f" pass --tokenizer {meta.get('implementation')}"
        )


def check_vocab_size(vocab_size: int, special_tokens: list[str]) -> None:
    """Fail clearly when ``vocab_size`` is not an integer from 256 + specials to the maximum.

    The maximum (``nanochat_rustbpe.MAX_VOCAB_SIZE``, 2**24) is far above any useful vocabulary
    and keeps every table sized by the vocabulary within memory.
    """
    low, high = 256 + len(special_tokens), nanochat_rustbpe.MAX_VOCAB_SIZE
    try:
        if isinstance(vocab_size, bool):
            raise TypeError
        vocab_size = operator.index(vocab_size)  # int, or an integer type such as numpy's
    except TypeError:
        raise UsageError(f"tokenizer.vocab_size must be an integer, got {vocab_size!r}") from None
    if not low <= vocab_size <= high:
        raise UsageError(
            f"tokenizer.vocab_size must be from {low} (256 bytes + {len(special_tokens)} special"
            f" tokens) to {high}, got {vocab_size}"
        )


class RustBPETokenizer:
    """A trained rustbpe tokenizer (implements :class:`nanochat.core.components.Tokenizer`)."""

    implementation = "rustbpe"

    def __init__(self, inner: nanochat_rustbpe.Tokenizer):
        self.inner = inner

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return self.inner.vocab_size

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token name to id."""
        return dict(self.inner.special_tokens)

    def special_id(self, name: str) -> int:
        """The id of special token ``name`` (e.g. ``<|bos|>``)."""
        return self.inner.special_tokens[name]

    @property
    def bos_id(self) -> int:
        """The id of ``<|bos|>``."""
        return self.special_id(BOS)

    def encode(self, text: str, allowed_special: str | set[str] | None = None) -> list[int]:
        """Encode one text; special tokens become ids only when allowed."""
        return self.inner.encode(text, allowed_special=allowed_special)

    def encode_batch(
        self, texts: list[str], allowed_special: str | set[str] | None = None
    ) -> list[list[int]]:
        """Encode many texts in parallel (the GIL is released)."""
        return self.inner.encode_batch(texts, allowed_special=allowed_special)

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to text."""
        return self.inner.decode(list(ids))

    def token_bytes(self) -> list[int]:
        """Byte length of every id; 0 for special tokens."""
        return list(self.inner.token_bytes())

    def save(self, directory: Path) -> None:
        """Write ``tokenizer.rbpe`` (and its metadata) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.inner.save(str(directory / TOKENIZER_FILE))
        write_meta(directory, self.implementation, self.vocab_size)


class RustBPEFactory:
    """Trains and loads :class:`RustBPETokenizer` objects."""

    def __init__(self, options: TokenizerOptions):
        self.options = options

    def train(
        self,
        texts: Iterable[str],
        vocab_size: int,
        special_tokens: list[str],
        progress: Callable[[int, int], None] | None = None,
    ) -> RustBPETokenizer:
        """Train on ``texts`` to ``vocab_size`` ids, special tokens included."""
        check_vocab_size(vocab_size, special_tokens)
        try:
            inner = nanochat_rustbpe.Tokenizer.train(
                texts,
                vocab_size=vocab_size,
                pattern=self.options.pattern or None,
                special_tokens=list(special_tokens),
                progress=progress,
            )
        except ValueError as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if message.startswith("invalid split pattern"):
                raise UsageError(f"tokenizer.pattern: {message}") from None
            raise NanochatError(f"rustbpe training failed: {message}") from None
        return RustBPETokenizer(inner)

    def load(self, directory: Path) -> RustBPETokenizer:
        """Load a tokenizer saved with :meth:`RustBPETokenizer.save`."""
        directory = Path(directory)
        check_meta(directory, RustBPETokenizer.implementation)
        try:
            inner = nanochat_rustbpe.Tokenizer.load(str(directory / TOKENIZER_FILE))
        except (ValueError, OSError) as exc:
            raise TokenizerFileError(str(exc).splitlines()[0]) from None
        return RustBPETokenizer(inner)
