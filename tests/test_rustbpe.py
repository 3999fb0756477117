"""Correctness of the Rust BPE tokenizer (nanochat_rustbpe) against references.

References: PyPI ``rustbpe`` 0.1.0 (training), ``tiktoken`` (encoding), HF ``tokenizers``
(exported tokenizer.json) and a slow pure-Python BPE written here.
"""

from __future__ import annotations

import collections
import pickle
import sys
from pathlib import Path

import nanochat_rustbpe
import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nanochat_rustbpe import DEFAULT_PATTERN, Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for benchmarks.corpus
import tiktoken  # noqa: E402 - a test dependency: missing it must fail, not skip

import rustbpe as pypi_rustbpe  # noqa: E402
from benchmarks.corpus import corpus_bytes, load_corpus  # noqa: E402

SPECIALS = ["<|bos|>", "<|user_start|>", "<|user_end|>"]
GPT4_PATTERN = DEFAULT_PATTERN.replace(r"\p{N}{1,2}", r"\p{N}{1,3}")


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """At least 10 MB of real text."""
    docs = load_corpus(10)
    assert corpus_bytes(docs) >= 10_000_000, "not enough real text on this machine"
    return docs


@pytest.fixture(scope="module")
def tok(corpus: list[str]) -> Tokenizer:
    """Our tokenizer trained on the corpus to 4,096 ids (plus special tokens)."""
    return Tokenizer.train(iter(corpus), 4096 + len(SPECIALS), special_tokens=SPECIALS)


@pytest.fixture(scope="module")
def tik(tok: Tokenizer) -> tiktoken.Encoding:
    """tiktoken built from our ranks, pattern and special tokens."""
    return tiktoken.Encoding(
        name="nanochat-test",
        pat_str=tok.pattern,
        mergeable_ranks=tok.to_tiktoken_ranks(),
        special_tokens=tok.special_tokens,
    )


# --- a slow pure-Python reference ----------------------------------------------------------


def reference_train(texts: list[str], num_merges: int, pattern: str) -> list[tuple[int, int]]:
    """Byte-level BPE that recounts every pair for every merge; ties go to the smallest pair."""
    counts = collections.Counter(c for t in texts for c in regex.findall(pattern, t))
    words = {tuple(c.encode("utf-8")): n for c, n in counts.items()}
    merges: list[tuple[int, int]] = []
    for m in range(num_merges):
        pairs: collections.Counter[tuple[int, int]] = collections.Counter()
        for w, n in words.items():
            for p in zip(w, w[1:], strict=False):
                pairs[p] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        new_id = 256 + m
        merged: dict[tuple[int, ...], int] = collections.defaultdict(int)
        for w, n in words.items():
            out: list[int] = []
            i = 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
        merges.append(best)
    return merges


SMALL_TEXTS = [
    "The quick brown fox jumps over the lazy dog. The dog doesn't care; it's asleep!!\n\n",
    "aaaa aaa aaaaa  bbbbbb abab ababab 12345 1234567 00000\r\n\r\n   \t x",
    "Ünïcödé tëxt — naïve café, 東京 大阪 東京, 😀😀 👍🏽 e\u0301e\u0301 'LL 'Ve 'S",
    "    indented code:\n        return x + 1  # comment\n",
]


@pytest.mark.parametrize("pattern", [DEFAULT_PATTERN, GPT4_PATTERN])
def test_training_matches_pure_python_reference(pattern: str) -> None:
    texts = SMALL_TEXTS * 3
    ours = Tokenizer.train(iter(texts), 256 + 120, pattern=pattern)
    assert ours.merges() == reference_train(texts, 120, pattern)


# --- against PyPI rustbpe --------------------------------------------------------------------


def pypi_ranks(texts: list[str], vocab_size: int, pattern: str) -> dict[bytes, int]:
    ref = pypi_rustbpe.Tokenizer()
    ref.train_from_iterator(iter(texts), vocab_size, pattern=pattern)
    return {bytes(k): v for k, v in ref.get_mergeable_ranks()}


@pytest.mark.parametrize("vocab_size", [4096, 32768])
def test_merges_match_pypi_rustbpe(corpus: list[str], vocab_size: int) -> None:
    ours = Tokenizer.train(iter(corpus), vocab_size)
    assert ours.vocab_size == vocab_size
    assert ours.to_tiktoken_ranks() == pypi_ranks(corpus, vocab_size, DEFAULT_PATTERN)


def test_custom_pattern_matches_pypi_rustbpe(corpus: list[str]) -> None:
    texts = corpus[:40]
    ours = Tokenizer.train(iter(texts), 2048, pattern=GPT4_PATTERN)
    assert ours.pattern == GPT4_PATTERN
    assert ours.to_tiktoken_ranks() == pypi_ranks(texts, 2048, GPT4_PATTERN)


def test_training_is_deterministic(corpus: list[str]) -> None:
    a = Tokenizer.train(iter(corpus[:30]), 1000, batch_size=3)
    b = Tokenizer.train(iter(corpus[:30]), 1000, batch_size=1000)
    assert a.merges() == b.merges()


# --- encoding --------------------------------------------------------------------------------


def test_encode_equals_tiktoken_on_whole_corpus(
    corpus: list[str], tok: Tokenizer, tik: tiktoken.Encoding
) -> None:
    expected = tik.encode_ordinary_batch(corpus)
    assert tok.encode_batch(corpus) == expected
    assert [tok.encode(d) for d in corpus[:50]] == expected[:50]


def test_hf_json_loads_and_encodes_identically(
    corpus: list[str], tok: Tokenizer, tmp_path: Path
) -> None:
    import tokenizers as hf

    path = tmp_path / "tokenizer.json"
    tok.save_hf_json(str(path))
    loaded = hf.Tokenizer.from_file(str(path))
    sample = corpus[:20] + SMALL_TEXTS
    got = [e.ids for e in loaded.encode_batch(sample, add_special_tokens=False)]
    assert got == tok.encode_batch(sample, allowed_special="all")
    assert loaded.get_vocab_size() == tok.vocab_size
    assert loaded.token_to_id("<|bos|>") == tok.special_tokens["<|bos|>"]


def test_special_tokens_stay_text_unless_allowed(tok: Tokenizer, tik: tiktoken.Encoding) -> None:
    text = "hello <|bos|> world<|user_start|>hi<|user_end|>"
    bos = tok.special_tokens["<|bos|>"]
    plain = tok.encode(text)
    assert bos not in plain
    assert plain == tik.encode(text, disallowed_special=())
    assert tok.decode(plain) == text
    allowed = tok.encode(text, allowed_special="all")
    assert allowed == tik.encode(text, allowed_special="all")
    assert allowed.count(bos) == 1
    only_bos = tok.encode(text, allowed_special={"<|bos|>"})
    assert only_bos == tik.encode(text, allowed_special={"<|bos|>"}, disallowed_special=())
    assert tok.encode_batch([text, text], allowed_special="all") == [allowed, allowed]
    with pytest.raises(ValueError, match="unknown special token"):
        tok.encode(text, allowed_special={"<|nope|>"})
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode(text, allowed_special="some")


def test_vocab_layout(tok: Tokenizer) -> None:
    assert tok.vocab_size == 4096 + len(SPECIALS)
    assert list(tok.special_tokens.values()) == list(range(4096, 4096 + len(SPECIALS)))
    sizes = tok.token_bytes()
    assert len(sizes) == tok.vocab_size
    assert sizes[:256] == [1] * 256
    assert sizes[4096:] == [0] * len(SPECIALS)
    a, b = tok.merges()[0]
    assert tok.id_to_bytes(256) == tok.id_to_bytes(a) + tok.id_to_bytes(b)
    assert tok.id_to_bytes(4096) == b"<|bos|>"
    with pytest.raises(ValueError):
        tok.decode([tok.vocab_size])
    assert tok.decode(tok.encode("\u00e9")[:1]) == "\ufffd"
    assert tok.decode_bytes([0xC3]) == b"\xc3"


text_pieces = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8")),
    st.sampled_from(["😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "東京", "中文字", "e\u0301", "a\u0308\u0301"]),
    st.text(alphabet=" \t\r\n\u00a0\u3000\u2028\x0b\x0c", min_size=1, max_size=20),
    st.sampled_from(["\r\n", "\r\n\r\n", "\n\n\n", "  \r\n  "]),
    st.text(alphabet="abcxyzſK'", min_size=50, max_size=3000),
    st.sampled_from(["", "'s", "'LL", "123456789", "<|bos|>", "don't", "ſ'ſ"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(text_pieces, max_size=8).map("".join))
def test_decode_encode_round_trip(tok: Tokenizer, tik: tiktoken.Encoding, s: str) -> None:
    ids = tok.encode(s)
    assert tok.decode(ids) == s
    assert tok.decode_bytes(ids) == s.encode("utf-8")
    assert ids == tik.encode_ordinary(s)


def test_empty_and_huge_words(tok: Tokenizer, tik: tiktoken.Encoding) -> None:
    assert tok.encode("") == []
    assert tok.encode_batch([]) == []
    assert tok.decode([]) == ""
    word = "ab" * 50_000
    assert tok.decode(tok.encode(word)) == word
    assert tok.encode(word) == tik.encode_ordinary(word)


# --- training API ----------------------------------------------------------------------------


def test_progress_is_reported(corpus: list[str]) -> None:
    calls: list[tuple[int, int]] = []
    Tokenizer.train(iter(corpus[:20]), 256 + 500, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (500, 500)
    assert all(t == 500 for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(calls) > 10


def test_progress_errors_stop_training(corpus: list[str]) -> None:
    def boom(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Tokenizer.train(iter(corpus[:5]), 1000, progress=boom)


def test_train_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train(["abc"], 257, special_tokens=["<|a|>", "<|b|>"])
    with pytest.raises(TypeError, match="str"):
        Tokenizer.train([b"bytes"], 300)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="pattern"):
        Tokenizer.train(["abc"], 300, pattern="(")
    with pytest.raises(ValueError, match="twice"):
        Tokenizer.train(["abc"], 300, special_tokens=["<|a|>", "<|a|>"])


def test_train_stops_when_nothing_is_left_to_merge() -> None:
    t = Tokenizer.train(iter(["ab ab"]), 1000)
    assert t.merges() == [(97, 98), (32, 256)]
    assert t.vocab_size == 258


# --- persistence -----------------------------------------------------------------------------


def test_save_load_round_trip(tok: Tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "tok.json"
    tok.save(str(path))
    back = Tokenizer.load(str(path))
    assert back.merges() == tok.merges()
    assert back.special_tokens == tok.special_tokens
    assert back.pattern == tok.pattern
    text = "Round <|bos|> trip ✓"
    assert back.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")


def test_pickle_round_trip(tok: Tokenizer) -> None:
    back = pickle.loads(pickle.dumps(tok))
    assert back.merges() == tok.merges()
    assert back.special_tokens == tok.special_tokens


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.3, 0.9, 0.9999])
def test_truncated_file_fails_clearly(tok: Tokenizer, tmp_path: Path, fraction: float) -> None:
    path = tmp_path / "tok.json"
    tok.save(str(path))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ValueError, match="not a nanochat-rustbpe tokenizer file") as err:
        Tokenizer.load(str(path))
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "content",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00",
        b'{"model": {"type": "BPE"}}',
        bytes(range(256)) * 4,
        b'{"format": "nanochat-rustbpe", "version": 99}',
        b'{"format": "nanochat-rustbpe", "version": 1, "pattern": "(", "special_tokens": [],'
        b' "num_merges": 0, "merges": []}',
        b'{"format": "nanochat-rustbpe", "version": 1, "pattern": "a", "special_tokens": [],'
        b' "num_merges": 1, "merges": [[300, 1]]}',
    ],
)
def test_foreign_file_fails_clearly(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "not-a-tokenizer.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a nanochat-rustbpe tokenizer file"):
        Tokenizer.load(str(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.json"):
        Tokenizer.load(str(tmp_path / "missing.json"))


def test_module_exports() -> None:
    assert nanochat_rustbpe.DEFAULT_PATTERN == DEFAULT_PATTERN
    assert r"\p{N}{1,2}" in DEFAULT_PATTERN
