//! Saving and loading tokenizers, and exporting them for tiktoken and HF `tokenizers`.
//!
//! The file format is described in the crate's README: one JSON object whose first key is
//! `"format": "nanochat-rustbpe"` with an integer `"version"`, the split `"pattern"`, the
//! `"merges"` as `[left, right]` id pairs in order, and the `"special_tokens"` names in id order.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::error::BpeError;
use crate::tokenizer::Tokenizer;

/// The value of the `format` key.
pub const FORMAT: &str = "nanochat-rustbpe";
/// The format version this crate writes and reads.
pub const VERSION: u64 = 1;

/// Serializes `tok` in the nanochat-rustbpe format.
pub fn to_json(tok: &Tokenizer) -> String {
    // Written by hand so that the magic key comes first and each merge sits on one line.
    let mut s = String::new();
    s.push_str(&format!(
        "{{\"format\": {FORMAT:?}, \"version\": {VERSION},\n"
    ));
    s.push_str(&format!(
        "\"pattern\": {},\n",
        Value::String(tok.pattern().to_string())
    ));
    s.push_str(&format!(
        "\"special_tokens\": {},\n",
        Value::from(tok.specials().to_vec())
    ));
    s.push_str(&format!("\"num_merges\": {},\n", tok.merges().len()));
    s.push_str("\"merges\": [");
    for (i, (a, b)) in tok.merges().iter().enumerate() {
        s.push_str(if i == 0 { "\n" } else { ",\n" });
        s.push_str(&format!("[{a}, {b}]"));
    }
    s.push_str("\n]}\n");
    s
}

/// Parses the nanochat-rustbpe format; every problem is a [`BpeError::Format`].
pub fn from_json(text: &[u8]) -> Result<Tokenizer, BpeError> {
    let bad = |m: &str| BpeError::Format(m.to_string());
    let head = br#"{"format": "nanochat-rustbpe""#;
    if !text.starts_with(head) {
        return Err(bad("missing the nanochat-rustbpe header"));
    }
    let v: Value = serde_json::from_slice(text)
        .map_err(|e| BpeError::Format(format!("truncated or corrupt: {e}")))?;
    let version = v.get("version").and_then(Value::as_u64);
    if version != Some(VERSION) {
        return Err(BpeError::Format(format!(
            "unsupported version {version:?}, this build reads version {VERSION}"
        )));
    }
    let pattern = v
        .get("pattern")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no pattern"))?;
    let specials = v
        .get("special_tokens")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no special_tokens"))?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad("special_tokens must be strings"))?;
    let merges = v
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no merges"))?
        .iter()
        .map(|m| {
            let pair = m.as_array().filter(|p| p.len() == 2)?;
            let a = u32::try_from(pair[0].as_u64()?).ok()?;
            let b = u32::try_from(pair[1].as_u64()?).ok()?;
            Some((a, b))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad("merges must be pairs of token ids"))?;
    if v.get("num_merges").and_then(Value::as_u64) != Some(merges.len() as u64) {
        return Err(bad("num_merges does not match the merges"));
    }
    Tokenizer::with_limit(pattern, merges, specials, token_budget(text.len()))
        .map_err(|e| BpeError::Format(e.to_string()))
}

/// The most bytes the tokens of a tokenizer read from `file_len` bytes may take together:
/// 64 MiB, or 64 bytes per byte of the file for larger files. A real tokenizer needs far less
/// (about half a byte of tokens per byte of file), but each merge can double a token's length,
/// so without a bound a file of a few hundred bytes could describe terabytes of tokens.
pub fn token_budget(file_len: usize) -> u64 {
    (64u64 << 20).max((file_len as u64).saturating_mul(64))
}

/// Writes `tok` to `path` (through a temporary file renamed into place).
pub fn save(tok: &Tokenizer, path: &Path) -> Result<(), BpeError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, to_json(tok))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Reads a tokenizer written by [`save`].
pub fn load(path: &Path) -> Result<Tokenizer, BpeError> {
    from_json(&std::fs::read(path)?)
}

/// GPT-2's byte-to-character map used by HF's ByteLevel: printable Latin-1 bytes map to
/// themselves, the others to U+0100 onwards in byte order.
pub fn byte_to_char() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u32 {
        let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        let cp = if printable {
            b
        } else {
            extra += 1;
            255 + extra
        };
        out[b as usize] = char::from_u32(cp).expect("valid code point");
    }
    out
}

/// The HF `tokenizers` JSON for `tok`: a BPE model over ByteLevel characters, the split pattern
/// as a `Split` pre-tokenizer followed by `ByteLevel(use_regex=false)`, and the special tokens
/// as added tokens.
///
/// The merge list holds every pair of tokens whose concatenation is a token, ranked by that
/// token's id, and `ignore_merges` is on, which reproduces tiktoken's encoding rule.
pub fn to_hf_json(tok: &Tokenizer) -> String {
    let map = byte_to_char();
    let name = |bytes: &[u8]| -> String { bytes.iter().map(|&b| map[b as usize]).collect() };
    let vocab_bytes = tok.vocab();
    let mut vocab = Map::new();
    for (id, bytes) in vocab_bytes.iter().enumerate() {
        vocab.entry(name(bytes)).or_insert(json!(id));
    }
    let mut merges: Vec<Value> = Vec::new();
    let mut seen = rustc_hash::FxHashSet::default();
    for (i, &(a, b)) in tok.merges().iter().enumerate() {
        let id = 256 + i;
        let bytes = &vocab_bytes[id];
        // The learned merge first, then any other split of the same bytes into two tokens.
        let mut splits = vec![(a as usize, b as usize)];
        for k in 1..bytes.len() {
            splits.push((k, usize::MAX));
        }
        for (l, r) in splits {
            let (lb, rb): (&[u8], &[u8]) = if r == usize::MAX {
                (&bytes[..l], &bytes[l..])
            } else {
                (&vocab_bytes[l], &vocab_bytes[r])
            };
            let (ln, rn) = (name(lb), name(rb));
            if vocab.contains_key(&ln)
                && vocab.contains_key(&rn)
                && seen.insert((ln.clone(), rn.clone()))
            {
                merges.push(json!([ln, rn]));
            }
        }
    }
    let added: Vec<Value> = tok
        .specials()
        .iter()
        .map(|s| {
            json!({"id": tok.special_id(s), "content": s, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": tok.pattern()}, "behavior": "Isolated",
             "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
             "use_regex": false}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": true,
                  "vocab": vocab, "merges": merges}
    });
    serde_json::to_string(&doc).expect("JSON values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretok::DEFAULT_PATTERN;

    fn tok() -> Tokenizer {
        Tokenizer::new(
            DEFAULT_PATTERN,
            vec![(97, 98), (256, 99)],
            vec!["<|bos|>".into()],
        )
        .unwrap()
    }

    #[test]
    fn json_round_trip() {
        let t = tok();
        let back = from_json(to_json(&t).as_bytes()).unwrap();
        assert_eq!(back.merges(), t.merges());
        assert_eq!(back.specials(), t.specials());
        assert_eq!(back.pattern(), t.pattern());
    }

    #[test]
    fn truncated_and_foreign_files_fail() {
        let text = to_json(&tok());
        for cut in [0, 10, 40, text.len() / 2, text.len() - 3] {
            let err = from_json(&text.as_bytes()[..cut]).err().expect("must fail");
            assert!(matches!(err, BpeError::Format(_)), "{err}");
        }
        assert!(from_json(b"\x89PNG\r\n").is_err());
        assert!(from_json(br#"{"format": "nanochat-rustbpe", "version": 9}"#).is_err());
    }

    #[test]
    fn doubling_merges_are_refused_without_allocating() {
        // Each merge doubles the last token: 60 merges would describe 2^60 bytes.
        let merges: Vec<String> = (0..60)
            .map(|i| {
                let t = if i == 0 { 97 } else { 255 + i };
                format!("[{t}, {t}]")
            })
            .collect();
        let text = format!(
            "{{\"format\": \"nanochat-rustbpe\", \"version\": 1, \"pattern\": \"a\", \
             \"special_tokens\": [], \"num_merges\": 60, \"merges\": [{}]}}",
            merges.join(", ")
        );
        let started = std::time::Instant::now();
        let err = from_json(text.as_bytes()).err().expect("must fail");
        assert!(started.elapsed().as_secs_f64() < 1.0);
        assert!(err.to_string().contains("bytes"), "{err}");
        // The same merges, short enough to fit, load.
        let short: Vec<String> = merges[..10].to_vec();
        let text = text
            .replace(&merges.join(", "), &short.join(", "))
            .replace("\"num_merges\": 60", "\"num_merges\": 10");
        assert_eq!(from_json(text.as_bytes()).unwrap().vocab()[265].len(), 1024);
    }

    #[test]
    fn byte_map_is_a_bijection() {
        let m = byte_to_char();
        let set: std::collections::HashSet<char> = m.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(m[b'!' as usize], '!');
        assert_eq!(m[b' ' as usize], '\u{120}');
    }
}
