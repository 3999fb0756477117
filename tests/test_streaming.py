"""TextStream: ids pushed one by one come out as text with no broken or repeated characters."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanochat.core.registry import Registry
from nanochat.core.special_tokens import BOS, PYTHON_END, PYTHON_START, SPECIAL_TOKENS
from nanochat.core.streaming import WINDOW_IDS, TextStream

FFFD = "\ufffd"
REGISTRY = Registry.load()

MULTIBYTE = (
    "汉字很好看，中文分词也很有意思。日本語のテキストも少し。한국어 문장도 있습니다. "
    "Emoji: 🙂😀🎉 family 👨‍👩‍👧‍👦 and 👩🏽‍💻 flags 🇯🇵🇫🇷 keycap 1️⃣. "
    "Combining: e\u0301 a\u0300\u0323 Z\u0351\u0314\u033a\u0353a\u0336l\u0327g\u0360o. "
    "हिन्दी पाठ, العربية, ελληνικά, кириллица, ∑∫√∞ ≠ ≤ € £ ¥ ©."
)

# Trained on CJK text, a small byte-level BPE learns merges that straddle characters
# (the end of one character with the start of the next), the hardest case for a stream.
TRAIN_TEXTS = [MULTIBYTE, "汉字汉字汉字很好很好", "🙂🙂🎉🎉 👨‍👩‍👧‍👦", "plain ascii text here"] * 30
TOKENIZERS = ["rustbpe", "hf-bpe"]


class CountingTokenizer:
    """Wraps a tokenizer and records how many ids every ``decode`` call received."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.decoded_lengths: list[int] = []

    @property
    def vocab_size(self) -> int:
        return int(self.inner.vocab_size)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self.inner.special_tokens)

    def encode(self, text: str, allowed_special: Any = None) -> list[int]:
        return list(self.inner.encode(text, allowed_special=allowed_special))

    def encode_batch(self, texts: list[str], allowed_special: Any = None) -> list[list[int]]:
        return [self.encode(t, allowed_special) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        ids = list(ids)
        self.decoded_lengths.append(len(ids))
        return str(self.inner.decode(ids))

    def token_bytes(self) -> list[int]:
        return list(self.inner.token_bytes())

    def save(self, directory: Any) -> None:
        self.inner.save(directory)


@pytest.fixture(scope="module", params=TOKENIZERS)
def tokenizer(request: pytest.FixtureRequest) -> Any:
    factory = REGISTRY.create("tokenizer", request.param)
    return factory.train(TRAIN_TEXTS, 320, list(SPECIAL_TOKENS))


@pytest.fixture(scope="module", params=TOKENIZERS)
def byte_tokenizer(request: pytest.FixtureRequest) -> Any:
    """Trained on ASCII only: every non-ASCII byte is a token of its own."""
    factory = REGISTRY.create("tokenizer", request.param)
    return factory.train(["plain ascii text, nothing else"] * 20, 280, list(SPECIAL_TOKENS))


def stream_pieces(tokenizer: Any, ids: list[int]) -> tuple[list[str], str]:
    """The piece returned by every push, and what flush returned."""
    stream = TextStream(tokenizer)
    pieces = [stream.push(i) for i in ids]
    return pieces, stream.flush()


def split_characters(tokenizer: Any, ids: list[int]) -> int:
    """How many ids decode, on their own, to a broken character (so the test means something)."""
    return sum(FFFD in tokenizer.decode([i]) for i in ids)


def test_multibyte_text_streams_exactly_without_broken_characters(tokenizer: Any) -> None:
    ids = tokenizer.encode(MULTIBYTE)
    assert tokenizer.decode(ids) == MULTIBYTE
    assert split_characters(tokenizer, ids) >= 20
    pieces, tail = stream_pieces(tokenizer, ids)
    assert "".join(pieces) + tail == MULTIBYTE
    assert tail == ""
    for piece in pieces:
        assert FFFD not in piece
    # Text comes out as soon as its characters are complete: after k ids, everything but the
    # one incomplete character at the end has been shown.
    for k in range(len(ids) + 1):
        decoded = tokenizer.decode(ids[:k])
        complete = decoded[:-1] if decoded.endswith(FFFD) else decoded
        assert "".join(pieces[:k]) == complete, k


def test_straddling_tokens_keep_the_window_small(tokenizer: Any) -> None:
    counting = CountingTokenizer(tokenizer)
    text = MULTIBYTE * 20
    ids = tokenizer.encode(text)
    pieces, tail = stream_pieces(counting, ids)
    assert "".join(pieces) + tail == text
    # Every decode call sees a few ids, not the whole history.
    assert max(counting.decoded_lengths) <= WINDOW_IDS + 1
    assert len(counting.decoded_lengths) <= 2 * len(ids) + 1


class StraddlingTokenizer:
    """A byte tokenizer whose every token but the first ends inside a character.

    ``encode`` cuts the UTF-8 bytes one byte after each character boundary, so a token holds
    the rest of one character and the first byte of the next: decoding any prefix of the ids
    ends with an incomplete character, the case that would make a naive window grow forever.
    """

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.ids: dict[bytes, int] = {}
        self.decoded_lengths: list[int] = []

    def _id(self, piece: bytes) -> int:
        if piece not in self.ids:
            self.ids[piece] = len(self.pieces)
            self.pieces.append(piece)
        return self.ids[piece]

    def encode(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        cuts = [0]
        offset = 0
        for ch in text:
            offset += len(ch.encode("utf-8"))
            cuts.append(min(offset + 1, len(data)))
        cuts = sorted(set(cuts))
        return [self._id(data[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]

    def decode(self, ids: Iterable[int]) -> str:
        ids = list(ids)
        self.decoded_lengths.append(len(ids))
        return b"".join(self.pieces[i] for i in ids).decode("utf-8", errors="replace")


def test_always_straddling_tokens_keep_the_window_small() -> None:
    tokenizer = StraddlingTokenizer()
    text = "汉字🙂€é" * 300
    ids = tokenizer.encode(text)
    assert all(tokenizer.decode(ids[:k]).endswith(FFFD) for k in range(1, 40))
    tokenizer.decoded_lengths.clear()
    pieces, tail = stream_pieces(tokenizer, ids)
    assert "".join(pieces) + tail == text
    assert all(FFFD not in piece for piece in pieces)
    assert max(tokenizer.decoded_lengths) <= WINDOW_IDS + 1
    assert sum(1 for piece in pieces if piece) >= len(ids) - 2  # one character per push


def test_genuine_replacement_characters_are_kept(tokenizer: Any) -> None:
    text = f"a{FFFD}b {FFFD}{FFFD}汉{FFFD}🙂{FFFD}\n{FFFD}"
    ids = tokenizer.encode(text)
    pieces, tail = stream_pieces(tokenizer, ids)
    assert "".join(pieces) + tail == text
    assert "".join(pieces).count(FFFD) + tail.count(FFFD) == text.count(FFFD)
    # Only the very last one waits for the end of the stream.
    assert tail == FFFD
    assert "".join(pieces) == text[:-1]


def test_genuine_replacement_character_is_released_by_the_next_character(tokenizer: Any) -> None:
    first = tokenizer.encode(f"x{FFFD}")
    stream = TextStream(tokenizer)
    shown = "".join(stream.push(i) for i in first)
    assert shown == "x"  # held: it might still be the start of a character
    shown += "".join(stream.push(i) for i in tokenizer.encode("y"))
    assert shown == f"x{FFFD}y"
    assert stream.flush() == ""


def test_special_tokens_stream_by_name(tokenizer: Any) -> None:
    text = f"{BOS}汉字🙂{PYTHON_START}'汉字'.count('字'){PYTHON_END}é👨‍👩‍👧{BOS}"
    ids = tokenizer.encode(text, allowed_special="all")
    special = tokenizer.special_tokens
    assert special[BOS] in ids and special[PYTHON_START] in ids and special[PYTHON_END] in ids
    pieces, tail = stream_pieces(tokenizer, ids)
    assert "".join(pieces) + tail == text
    assert all(FFFD not in piece for piece in pieces)
    # A special token is shown whole the moment it is pushed.
    position = ids.index(special[PYTHON_START])
    assert "".join(pieces[: position + 1]).endswith(PYTHON_START)


def test_stream_starts_afresh_after_flush(tokenizer: Any) -> None:
    stream = TextStream(tokenizer)
    assert stream.flush() == ""
    for text in ["汉字🙂", "👨‍👩‍👧‍👦 e\u0301"]:
        ids = tokenizer.encode(text)
        assert stream.extend(ids) + stream.flush() == text


def test_cut_off_character_is_released_at_flush(byte_tokenizer: Any) -> None:
    ids = byte_tokenizer.encode("ok 🙂")
    pieces, tail = stream_pieces(byte_tokenizer, ids[:-1])  # the last byte of 🙂 never comes
    assert "".join(pieces) == "ok "
    assert tail == FFFD


INVALID_STREAMS = [
    ("🙂", slice(0, 2), "a"),  # a truncated 4-byte character, then ASCII
    ("€", slice(1, 3), "b"),  # continuation bytes without a lead byte
    ("汉", slice(0, 1), "€"),  # a lead byte, then a complete character
    ("🎉", slice(1, 4), "🙂"),
]


@pytest.mark.parametrize(("source", "part", "after"), INVALID_STREAMS)
def test_invalid_byte_streams_come_out_as_the_decoder_renders_them(
    byte_tokenizer: Any, source: str, part: slice, after: str
) -> None:
    broken = byte_tokenizer.encode(source)[part]
    ids = byte_tokenizer.encode("x") + broken + byte_tokenizer.encode(after) + broken
    pieces, tail = stream_pieces(byte_tokenizer, ids)
    assert "".join(pieces) + tail == byte_tokenizer.decode(ids)


ALPHABET = list("ab 汉字é\u0301€") + ["🙂", "👨‍👩‍👧", FFFD, "\n"]


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(st.sampled_from(ALPHABET), max_size=40))
def test_any_text_streams_exactly(parts: list[str]) -> None:
    tokenizer = _shared_tokenizer()
    text = "".join(parts)
    ids = tokenizer.encode(text)
    pieces, tail = stream_pieces(tokenizer, ids)
    assert "".join(pieces) + tail == text
    assert "".join(pieces).count(FFFD) + tail.count(FFFD) == text.count(FFFD)


_CACHE: dict[str, Any] = {}


def _shared_tokenizer() -> Any:
    """One rustbpe tokenizer for the property test (hypothesis runs outside fixtures)."""
    if "rustbpe" not in _CACHE:
        factory = REGISTRY.create("tokenizer", "rustbpe")
        _CACHE["rustbpe"] = factory.train(TRAIN_TEXTS, 320, list(SPECIAL_TOKENS))
    return _CACHE["rustbpe"]


# Bytes that start, continue or break UTF-8 sequences, as ids of the ASCII-trained rustbpe
# tokenizer (whose ids 0..255 are the single bytes; 256..264 exist in any vocabulary).
AWKWARD_BYTES = [0x41, 0x0A, 0x80, 0x9F, 0xBD, 0xBF, 0xC2, 0xE2, 0xE6, 0xEF, 0xF0, 0xF4, 0xFF]


@settings(max_examples=150, deadline=None)
@given(ids=st.lists(st.sampled_from(AWKWARD_BYTES) | st.integers(0, 264), max_size=30))
def test_any_ids_stream_as_they_decode(ids: list[int]) -> None:
    tokenizer = _byte_rustbpe()
    pieces, tail = stream_pieces(tokenizer, ids)
    assert "".join(pieces) + tail == tokenizer.decode(ids)


def _byte_rustbpe() -> Any:
    """The ASCII-trained rustbpe tokenizer, shared by the property test."""
    if "bytes" not in _CACHE:
        factory = REGISTRY.create("tokenizer", "rustbpe")
        _CACHE["bytes"] = factory.train(["plain ascii text"] * 20, 280, list(SPECIAL_TOKENS))
    return _CACHE["bytes"]
