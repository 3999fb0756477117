"""Type stubs for the Rust extension module."""

from collections.abc import Callable, Iterable

DEFAULT_PATTERN: str
MAX_VOCAB_SIZE: int

class Tokenizer:
    """A byte-level BPE tokenizer: ids 0-255 are bytes, then one id per merge, then specials."""

    @staticmethod
    def train(
        texts: Iterable[str],
        vocab_size: int,
        pattern: str | None = None,
        special_tokens: list[str] = ...,
        progress: Callable[[int, int], None] | None = None,
        batch_size: int = 8192,
    ) -> Tokenizer:
        """Train on ``texts`` up to ``vocab_size`` ids (bytes + merges + special tokens).

        ``progress(done, total)`` is called every ~0.5% of the merges and at the end.
        ``vocab_size`` must lie in ``256 + len(special_tokens) .. MAX_VOCAB_SIZE`` and
        ``batch_size`` in ``1 .. 2**20`` (ValueError otherwise). Ctrl-C interrupts training
        within a fraction of a second (KeyboardInterrupt).
        """

    @property
    def vocab_size(self) -> int:
        """Number of ids: 256 bytes + merges + special tokens."""

    @property
    def pattern(self) -> str:
        """The split pattern."""

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special-token names mapped to their ids."""

    def encode(self, text: str, allowed_special: str | set[str] | None = None) -> list[int]:
        """Encode ``text``; special tokens become ids only if allowed ("all" or a set of names)."""

    def encode_batch(
        self, texts: list[str], allowed_special: str | set[str] | None = None
    ) -> list[list[int]]:
        """Encode many texts in parallel on all cores."""

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to text; invalid UTF-8 becomes U+FFFD."""

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Decode ids to the exact bytes they stand for."""

    def token_bytes(self) -> list[int]:
        """Byte length of every id, 0 for special tokens."""

    def id_to_bytes(self, id: int) -> bytes:
        """The bytes of one id (a special token's bytes are its name)."""

    def merges(self) -> list[tuple[int, int]]:
        """The merges in order; merge ``i`` made token ``256 + i``."""

    def save(self, path: str) -> None:
        """Write the tokenizer to ``path`` in the nanochat-rustbpe format."""

    @staticmethod
    def load(path: str) -> Tokenizer:
        """Read a tokenizer written by :meth:`save`; a bad file raises one ValueError."""

    def to_tiktoken_ranks(self) -> dict[bytes, int]:
        """Token bytes mapped to ranks, for ``tiktoken.Encoding(mergeable_ranks=...)``."""

    def save_hf_json(self, path: str) -> None:
        """Write a HF ``tokenizers`` ``tokenizer.json`` that encodes identically."""
