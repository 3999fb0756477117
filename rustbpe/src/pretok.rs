//! Pre-tokenization: splitting text into chunks that BPE never merges across.
//!
//! The default (GPT-4 style) pattern has a hand-written splitter that gives exactly the chunks
//! `fancy_regex` would give; any other pattern goes through `fancy_regex` itself.

use crate::error::BpeError;
use crate::unicode::{char_at, class_of, classes, LETTER, NUMBER, SPACE};

/// nanochat's GPT-4-style split pattern (numbers are split into groups of at most two digits).
pub const DEFAULT_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

/// Class bits of the character at byte `i`, with its length.
#[inline(always)]
fn class_at(b: &[u8], i: usize) -> (u32, u8, usize) {
    let (cp, len) = char_at(b, i);
    (cp, class_of(cp), len)
}

/// End of the run of characters starting at `i` whose class satisfies `pred`.
#[inline(always)]
fn run_end(b: &[u8], mut i: usize, pred: impl Fn(u32, u8) -> bool) -> usize {
    while i < b.len() {
        let (cp, cls, len) = class_at(b, i);
        if !pred(cp, cls) {
            break;
        }
        i += len;
    }
    i
}

#[inline(always)]
fn is_punct(cls: u8) -> bool {
    cls == 0
}

/// End (exclusive) of the default-pattern match that starts at byte `i` (`i < b.len()`).
#[inline]
fn default_match_end(b: &[u8], i: usize) -> usize {
    let n = b.len();
    let (c0, cls0, len0) = class_at(b, i);
    let next = i + len0;
    // '(?i:[sdmt]|ll|ve|re)
    if c0 == u32::from(b'\'') && next < n {
        let (c1, len1) = char_at(b, next);
        match c1 {
            0x73 | 0x53 | 0x17F | 0x64 | 0x44 | 0x6D | 0x4D | 0x74 | 0x54 => return next + len1,
            _ => {}
        }
        if next + 1 < n {
            let c2 = b[next + 1] | 0x20;
            match (b[next] | 0x20, c2) {
                (b'l', b'l') | (b'v', b'e') | (b'r', b'e') if b[next + 1].is_ascii_alphabetic() => {
                    return next + 2
                }
                _ => {}
            }
        }
    }
    // [^\r\n\p{L}\p{N}]?+\p{L}+
    if cls0 & LETTER != 0 {
        return run_end(b, next, |_, c| c & LETTER != 0);
    }
    let (_, cls1, len1) = if next < n {
        class_at(b, next)
    } else {
        (0, 0, 0)
    };
    if c0 != 0x0D && c0 != 0x0A && cls0 & NUMBER == 0 && next < n && cls1 & LETTER != 0 {
        return run_end(b, next + len1, |_, c| c & LETTER != 0);
    }
    // \p{N}{1,2}
    if cls0 & NUMBER != 0 {
        return if next < n && cls1 & NUMBER != 0 {
            next + len1
        } else {
            next
        };
    }
    //  ?[^\s\p{L}\p{N}]++[\r\n]*
    let punct_start = if is_punct(cls0) {
        Some(i)
    } else if c0 == 0x20 && next < n && is_punct(cls1) {
        Some(next)
    } else {
        None
    };
    if let Some(start) = punct_start {
        let j = run_end(b, start, |_, c| is_punct(c));
        return run_end(b, j, |cp, _| cp == 0x0D || cp == 0x0A);
    }
    // The character is whitespace. \s*[\r\n] | \s+(?!\S) | \s+
    let mut j = i;
    let mut last_newline_end = None;
    let mut last_char_start = i;
    while j < n {
        let (cp, cls, len) = class_at(b, j);
        if cls & SPACE == 0 {
            break;
        }
        if cp == 0x0D || cp == 0x0A {
            last_newline_end = Some(j + len);
        }
        last_char_start = j;
        j += len;
    }
    if let Some(end) = last_newline_end {
        return end;
    }
    if j == n || last_char_start == i {
        j
    } else {
        last_char_start
    }
}

/// Calls `f` on each chunk of `text` under the default pattern, in order.
#[inline]
pub fn split_default<'a>(text: &'a str, mut f: impl FnMut(&'a str)) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let end = default_match_end(b, i);
        f(&text[i..end]);
        i = end;
    }
}

/// A compiled split pattern.
pub enum Splitter {
    /// The default pattern, split by the hand-written matcher.
    Default,
    /// Any other pattern, split by `fancy_regex`.
    Regex(Box<fancy_regex::Regex>),
}

impl Splitter {
    /// Compiles `pattern`, using the fast matcher when it is [`DEFAULT_PATTERN`].
    pub fn new(pattern: &str) -> Result<Self, BpeError> {
        if pattern == DEFAULT_PATTERN {
            classes();
            return Ok(Splitter::Default);
        }
        Self::regex(pattern)
    }

    /// Compiles `pattern` with `fancy_regex`, never using the fast matcher.
    pub fn regex(pattern: &str) -> Result<Self, BpeError> {
        let re = fancy_regex::Regex::new(pattern)
            .map_err(|e| BpeError::Pattern(format!("{pattern:?}: {e}")))?;
        Ok(Splitter::Regex(Box::new(re)))
    }

    /// Calls `f` on each chunk of `text`, in order. The chunks cover the whole text: where the
    /// pattern leaves text unmatched (a pattern such as `\p{L}+` skips spaces and punctuation),
    /// each stretch of unmatched text between two matches is a chunk of its own, so that
    /// decoding the encoding gives back every byte. Patterns that match everything (such as
    /// [`DEFAULT_PATTERN`]) split exactly as `re.findall` would.
    pub fn split<'a>(&self, text: &'a str, f: impl FnMut(&'a str)) {
        match self {
            Splitter::Default => split_default(text, f),
            Splitter::Regex(_) => {
                self.split_part(text, 0, usize::MAX, f);
            }
        }
    }

    /// Splits `text` from byte `from` (which must be where an earlier part ended, or 0) until
    /// at least `max_bytes` bytes have been handed to `f` or the text ends; returns where it
    /// stopped (`text.len()` at the end). Splitting a text part by part gives exactly the
    /// chunks [`Self::split`] gives, so that a huge text can be split in bounded steps.
    pub fn split_part<'a>(
        &self,
        text: &'a str,
        from: usize,
        max_bytes: usize,
        mut f: impl FnMut(&'a str),
    ) -> usize {
        let stop = from.saturating_add(max_bytes);
        match self {
            Splitter::Default => {
                let b = text.as_bytes();
                let mut i = from;
                while i < b.len() {
                    let end = default_match_end(b, i);
                    f(&text[i..end]);
                    i = end;
                    if i >= stop {
                        break;
                    }
                }
                i
            }
            Splitter::Regex(re) => {
                // `done`: end of the text handed to `f` so far; `start`: where to search next.
                let mut done = from;
                let mut start = from;
                while start <= text.len() {
                    match re.find_from_pos(text, start) {
                        Ok(Some(m)) => {
                            if m.end() == m.start() {
                                // Empty match: step over one character (it joins the gap).
                                start = m.end()
                                    + text[m.end()..].chars().next().map_or(1, char::len_utf8);
                                continue;
                            }
                            if m.start() > done {
                                f(&text[done..m.start()]);
                            }
                            f(m.as_str());
                            done = m.end();
                            start = m.end();
                            if done >= stop && done < text.len() {
                                return done;
                            }
                        }
                        Ok(None) => break,
                        // A backtracking limit error ends the search: the rest is one chunk.
                        Err(_) => break,
                    }
                }
                if done < text.len() {
                    f(&text[done..]);
                }
                text.len()
            }
        }
    }

    /// The chunks of `text` as a vector (convenient for tests).
    pub fn chunks<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let mut out = Vec::new();
        self.split(text, |c| out.push(c));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift) for fuzzing without extra dependencies.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    const ALPHABET: &[&str] = &[
        "a",
        "Z",
        "s",
        "S",
        "t",
        "d",
        "m",
        "l",
        "L",
        "v",
        "e",
        "E",
        "r",
        "R",
        "\u{17F}",
        "\u{212A}",
        "'",
        "\u{2019}",
        " ",
        "  ",
        "\t",
        "\n",
        "\r",
        "\r\n",
        "\u{a0}",
        "\u{3000}",
        "\u{2028}",
        "\u{85}",
        "\u{b}",
        "\u{c}",
        "0",
        "7",
        "\u{663}",
        "\u{bd}",
        "\u{2167}",
        "\u{1d7ce}",
        ".",
        ",",
        "!",
        "?",
        "-",
        "_",
        "(",
        "\"",
        "😀",
        "👍🏽",
        "\u{301}",
        "\u{200d}",
        "é",
        "中",
        "文",
        "ß",
        "\u{10400}",
        "\u{1f1fa}",
        "$",
        "\u{0}",
        "\u{7f}",
        "ǅ",
        "\u{e000}",
    ];

    #[test]
    fn fast_splitter_agrees_with_regex_on_adversarial_text() {
        let fast = Splitter::new(DEFAULT_PATTERN).unwrap();
        let slow = Splitter::regex(DEFAULT_PATTERN).unwrap();
        assert!(matches!(fast, Splitter::Default));
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..20_000 {
            let len = (rng.next() % 24) as usize;
            let text: String = (0..len)
                .map(|_| ALPHABET[(rng.next() % ALPHABET.len() as u64) as usize])
                .collect();
            assert_eq!(
                fast.chunks(&text),
                slow.chunks(&text),
                "round {round}: {text:?}"
            );
        }
    }

    #[test]
    fn fast_splitter_agrees_on_every_bmp_character() {
        let fast = Splitter::new(DEFAULT_PATTERN).unwrap();
        let slow = Splitter::regex(DEFAULT_PATTERN).unwrap();
        let mut text = String::new();
        for cp in (0u32..0x11000).step_by(3) {
            if let Some(c) = char::from_u32(cp) {
                text.push(c);
                text.push(['a', ' ', '1', '\'', '\n', '.'][(cp % 6) as usize]);
            }
        }
        assert_eq!(fast.chunks(&text), slow.chunks(&text));
    }

    #[test]
    fn default_chunks_look_like_gpt4() {
        let s = Splitter::new(DEFAULT_PATTERN).unwrap();
        assert_eq!(
            s.chunks("Hello world's 12345 foo!!\n\n  bar"),
            vec!["Hello", " world", "'s", " ", "12", "34", "5", " foo", "!!\n\n", " ", " bar"]
        );
        assert!(s.chunks("").is_empty());
    }

    #[test]
    fn uncovered_text_becomes_chunks() {
        let s = Splitter::new(r"\p{L}+").unwrap();
        assert_eq!(
            s.chunks("hello, world! 123"),
            vec!["hello", ", ", "world", "! 123"]
        );
        assert_eq!(s.chunks("  x"), vec!["  ", "x"]);
        assert_eq!(s.chunks("!!"), vec!["!!"]);
        // Empty matches never drop a character either.
        let e = Splitter::new(r"a*").unwrap();
        assert_eq!(e.chunks("baab"), vec!["b", "aa", "b"]);
        let l = Splitter::new(r"(?=x)").unwrap();
        assert_eq!(l.chunks("yxy").concat(), "yxy");
    }

    #[test]
    fn splitting_in_parts_equals_splitting_whole() {
        let text = "Hello world's 12345 foo!!\n\n  bar, baz... é€😀 東京 \r\n x".repeat(7);
        for pattern in [DEFAULT_PATTERN, r"\p{L}+", r"a*", r"\s+(?!\S)|\w+"] {
            let s = Splitter::new(pattern).unwrap();
            let whole = s.chunks(&text);
            for max in [1, 2, 5, 17, 100, 10_000] {
                let mut parts = Vec::new();
                let mut from = 0;
                let mut steps = 0;
                while from < text.len() {
                    from = s.split_part(&text, from, max, |c| parts.push(c));
                    steps += 1;
                }
                assert_eq!(parts, whole, "{pattern} in parts of {max}");
                if max == 1 {
                    assert!(steps > 10, "{pattern}: {steps} steps");
                }
            }
        }
    }

    #[test]
    fn bad_pattern_is_an_error() {
        assert!(Splitter::new("(").is_err());
    }
}
