//! The tokenizer: merges, special tokens, split pattern, encoding and decoding.

use std::sync::Mutex;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::bpe::{EncodeState, MergeTables};
use crate::error::BpeError;
use crate::pretok::Splitter;

/// Most ids a tokenizer may have (bytes, merges and special tokens together): 2^24.
pub const MAX_VOCAB_SIZE: usize = 1 << 24;

/// A trained byte-level BPE tokenizer. Ids 0..256 are bytes, then one id per merge, then the
/// special tokens in registration order.
pub struct Tokenizer {
    pattern: String,
    splitter: Splitter,
    merges: Vec<(u32, u32)>,
    vocab: Vec<Vec<u8>>,
    specials: Vec<String>,
    special_ids: FxHashMap<String, u32>,
    tables: MergeTables,
    states: Vec<Mutex<EncodeState>>,
}

/// Which special tokens `encode` turns into ids; all others stay ordinary text.
#[derive(Clone, Debug, Default)]
pub enum Allowed {
    /// None: special-token text is encoded as text.
    #[default]
    None,
    /// Every registered special token.
    All,
    /// These special tokens (by name).
    Some(Vec<String>),
}

impl Tokenizer {
    /// Builds a tokenizer from merges (in order), special-token names and a split pattern.
    ///
    /// At most [`MAX_VOCAB_SIZE`] ids; the tokens' total size is not limited here, so merges
    /// from an untrusted source go through [`Self::with_limit`].
    pub fn new(
        pattern: &str,
        merges: Vec<(u32, u32)>,
        specials: Vec<String>,
    ) -> Result<Self, BpeError> {
        Self::with_limit(pattern, merges, specials, u64::MAX)
    }

    /// Like [`Self::new`], but fails when the bytes of all tokens together would exceed
    /// `max_total_bytes`: a few merges can describe exponentially long tokens (each merge can
    /// double a token), so a tokenizer read from a file must be bounded before it is built.
    pub fn with_limit(
        pattern: &str,
        merges: Vec<(u32, u32)>,
        specials: Vec<String>,
        max_total_bytes: u64,
    ) -> Result<Self, BpeError> {
        let ids = 256u64 + merges.len() as u64 + specials.len() as u64;
        if ids > MAX_VOCAB_SIZE as u64 {
            return Err(BpeError::Invalid(format!(
                "{ids} token ids is more than the limit of {MAX_VOCAB_SIZE}"
            )));
        }
        // Token lengths first, from the merges alone, in checked arithmetic.
        let mut lengths: Vec<u64> = vec![1; 256];
        lengths.reserve(merges.len());
        let mut total: u64 = 256;
        for (i, &(a, b)) in merges.iter().enumerate() {
            let id = 256 + i;
            if a as usize >= id || b as usize >= id {
                return Err(BpeError::Invalid(format!(
                    "merge {i} ({a}, {b}) refers to a token that does not exist yet"
                )));
            }
            let len = lengths[a as usize].saturating_add(lengths[b as usize]);
            total = total.saturating_add(len);
            if total > max_total_bytes {
                return Err(BpeError::Invalid(format!(
                    "merge {i} ({a}, {b}) makes the tokens longer than {max_total_bytes} bytes \
                     in total (token {id} alone would be {len} bytes)"
                )));
            }
            lengths.push(len);
        }
        let splitter = Splitter::new(pattern)?;
        let mut vocab: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        vocab.reserve(merges.len());
        for &(a, b) in merges.iter() {
            let mut bytes = vocab[a as usize].clone();
            bytes.extend_from_slice(&vocab[b as usize]);
            vocab.push(bytes);
        }
        let mut special_ids = FxHashMap::default();
        for (i, s) in specials.iter().enumerate() {
            if s.is_empty() {
                return Err(BpeError::Invalid("a special token cannot be empty".into()));
            }
            if special_ids
                .insert(s.clone(), (vocab.len() + i) as u32)
                .is_some()
            {
                return Err(BpeError::Invalid(format!(
                    "special token {s:?} given twice"
                )));
            }
        }
        let tables = MergeTables::new(&vocab);
        let states = (0..rayon::current_num_threads() + 1)
            .map(|_| Mutex::new(EncodeState::default()))
            .collect();
        Ok(Self {
            pattern: pattern.to_string(),
            splitter,
            merges,
            vocab,
            specials,
            special_ids,
            tables,
            states,
        })
    }

    /// The split pattern.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The merges in order; merge `i` made token `256 + i`.
    pub fn merges(&self) -> &[(u32, u32)] {
        &self.merges
    }

    /// Special-token names in id order.
    pub fn specials(&self) -> &[String] {
        &self.specials
    }

    /// The id of special token `name`.
    pub fn special_id(&self, name: &str) -> Option<u32> {
        self.special_ids.get(name).copied()
    }

    /// Number of ids: 256 bytes + merges + special tokens.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len() + self.specials.len()
    }

    /// Bytes of every ordinary (non-special) token, indexed by id.
    pub fn vocab(&self) -> &[Vec<u8>] {
        &self.vocab
    }

    /// The bytes of `id` (a special token's bytes are its name).
    pub fn id_to_bytes(&self, id: u32) -> Result<&[u8], BpeError> {
        let i = id as usize;
        if i < self.vocab.len() {
            Ok(&self.vocab[i])
        } else if i < self.vocab_size() {
            Ok(self.specials[i - self.vocab.len()].as_bytes())
        } else {
            Err(BpeError::UnknownId(id))
        }
    }

    /// Byte length of every id, 0 for special tokens.
    pub fn token_bytes(&self) -> Vec<u32> {
        self.vocab
            .iter()
            .map(|b| b.len() as u32)
            .chain(self.specials.iter().map(|_| 0))
            .collect()
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut EncodeState) -> R) -> R {
        let slot = rayon::current_thread_index().map_or(0, |i| i + 1);
        match self.states.get(slot).map(|m| m.try_lock()) {
            Some(Ok(mut guard)) => f(&mut guard),
            _ => f(&mut EncodeState::default()),
        }
    }

    /// Appends the ids of `text`, with no special tokens, to `out`.
    fn encode_ordinary_into(&self, text: &str, state: &mut EncodeState, out: &mut Vec<u32>) {
        self.splitter.split(text, |chunk| {
            state.encode_chunk(&self.tables, chunk.as_bytes(), out)
        });
    }

    /// Encodes `text`; special tokens named by `allowed` become their ids.
    pub fn encode(&self, text: &str, allowed: &Allowed) -> Result<Vec<u32>, BpeError> {
        let specials: Vec<(&str, u32)> = match allowed {
            Allowed::None => Vec::new(),
            Allowed::All => self
                .specials
                .iter()
                .map(|s| (s.as_str(), self.special_ids[s]))
                .collect(),
            Allowed::Some(names) => names
                .iter()
                .map(|n| {
                    self.special_id(n)
                        .map(|id| (n.as_str(), id))
                        .ok_or_else(|| BpeError::Invalid(format!("unknown special token {n:?}")))
                })
                .collect::<Result<_, _>>()?,
        };
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        self.with_state(|state| {
            if specials.is_empty() {
                self.encode_ordinary_into(text, state, &mut out);
                return;
            }
            // Next occurrence of each special token at or after `start`.
            let mut next: Vec<Option<usize>> = specials.iter().map(|(s, _)| text.find(s)).collect();
            let mut start = 0;
            loop {
                let mut best: Option<(usize, usize)> = None;
                for (i, pos) in next.iter_mut().enumerate() {
                    if let Some(p) = *pos {
                        if p < start {
                            *pos = text[start..].find(specials[i].0).map(|q| q + start);
                        }
                    }
                    if let Some(p) = *pos {
                        let better = match best {
                            None => true,
                            Some((bp, bi)) => {
                                p < bp || (p == bp && specials[i].0.len() > specials[bi].0.len())
                            }
                        };
                        if better {
                            best = Some((p, i));
                        }
                    }
                }
                match best {
                    Some((p, i)) => {
                        self.encode_ordinary_into(&text[start..p], state, &mut out);
                        out.push(specials[i].1);
                        start = p + specials[i].0.len();
                    }
                    None => {
                        self.encode_ordinary_into(&text[start..], state, &mut out);
                        break;
                    }
                }
            }
        });
        Ok(out)
    }

    /// Encodes many texts in parallel on all cores.
    pub fn encode_batch<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        allowed: &Allowed,
    ) -> Result<Vec<Vec<u32>>, BpeError> {
        texts
            .par_iter()
            .map(|t| self.encode(t.as_ref(), allowed))
            .collect()
    }

    /// The bytes that `ids` stand for.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, BpeError> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            out.extend_from_slice(self.id_to_bytes(id)?);
        }
        Ok(out)
    }

    /// The text that `ids` stand for; invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, BpeError> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretok::DEFAULT_PATTERN;
    use crate::train::train_texts;

    fn small() -> Tokenizer {
        let texts = ["hello world, hello there! <|bos|> the world says hello"; 3];
        let splitter = Splitter::new(DEFAULT_PATTERN).unwrap();
        let merges = train_texts(&splitter, &texts, 40);
        Tokenizer::new(
            DEFAULT_PATTERN,
            merges,
            vec!["<|bos|>".into(), "<|eos|>".into()],
        )
        .unwrap()
    }

    #[test]
    fn round_trips_and_keeps_specials_as_text() {
        let t = small();
        let s = "hello <|bos|> wörld 😀\r\n  end";
        let ids = t.encode(s, &Allowed::None).unwrap();
        assert_eq!(t.decode(&ids).unwrap(), s);
        let bos = t.special_id("<|bos|>").unwrap();
        assert!(!ids.contains(&bos));
        let ids = t.encode(s, &Allowed::All).unwrap();
        assert_eq!(ids.iter().filter(|&&i| i == bos).count(), 1);
        assert_eq!(t.decode(&ids).unwrap(), s);
        let only_eos = Allowed::Some(vec!["<|eos|>".into()]);
        assert!(!t.encode(s, &only_eos).unwrap().contains(&bos));
        assert!(t
            .encode(s, &Allowed::Some(vec!["<|nope|>".into()]))
            .is_err());
    }

    #[test]
    fn vocab_size_counts_bytes_merges_and_specials() {
        let t = small();
        assert_eq!(t.vocab_size(), 256 + t.merges().len() + 2);
        assert_eq!(t.token_bytes().len(), t.vocab_size());
        assert!(t.decode(&[t.vocab_size() as u32]).is_err());
    }

    #[test]
    fn rejects_merges_that_refer_to_the_future() {
        assert!(Tokenizer::new(DEFAULT_PATTERN, vec![(256, 1)], vec![]).is_err());
    }
}
