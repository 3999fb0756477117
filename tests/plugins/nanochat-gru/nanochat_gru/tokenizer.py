"""A byte tokenizer implementing nanochat's tokenizer contract: ids 0-255 are bytes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from nanochat_gru.plugin import BytesOptions

FILE = "bytes-tokenizer.json"


class BytesTokenizer:
    """UTF-8 bytes, then the special tokens."""

    def __init__(self, specials: list[str]) -> None:
        self._special = {name: 256 + i for i, name in enumerate(specials)}

    @property
    def vocab_size(self) -> int:
        """256 bytes plus the specials."""
        return 256 + len(self._special)

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special name to id."""
        return dict(self._special)

    def encode(self, text: str, allowed_special: str | set[str] | None = None) -> list[int]:
        """Bytes of ``text``; allowed special tokens become their ids."""
        allowed = set(self._special) if allowed_special == "all" else set(allowed_special or ())
        if not allowed:
            return list(text.encode("utf-8"))
        pattern = "(" + "|".join(re.escape(s) for s in sorted(allowed, key=len, reverse=True)) + ")"
        ids: list[int] = []
        for piece in re.split(pattern, text):
            ids += [self._special[piece]] if piece in allowed else list(piece.encode("utf-8"))
        return ids

    def encode_batch(
        self, texts: list[str], allowed_special: str | set[str] | None = None
    ) -> list[list[int]]:
        """Each text encoded."""
        return [self.encode(t, allowed_special) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Bytes back to text; specials by name."""
        names = {v: k for k, v in self._special.items()}
        out, pending = [], bytearray()
        for i in ids:
            if i < 256:
                pending.append(i)
                continue
            out.append(pending.decode("utf-8", errors="replace"))
            pending = bytearray()
            out.append(names[i])
        out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out)

    def token_bytes(self) -> list[int]:
        """1 for bytes, 0 for specials."""
        return [1] * 256 + [0] * len(self._special)

    def save(self, directory: Path) -> None:
        """Write the special tokens."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / FILE).write_text(json.dumps(list(self._special)))


class BytesFactory:
    """Nothing to learn: training only reads the specials."""

    def __init__(self, options: BytesOptions) -> None:
        self.options = options

    def train(
        self,
        texts: Iterable[str],
        vocab_size: int,
        special_tokens: list[str],
        progress: Callable[[int, int], None] | None = None,
    ) -> BytesTokenizer:
        """A byte tokenizer (``texts`` and ``vocab_size`` are not used)."""
        return BytesTokenizer(special_tokens)

    def load(self, directory: Path) -> BytesTokenizer:
        """Load a saved byte tokenizer."""
        return BytesTokenizer(json.loads((directory / FILE).read_text()))
