//! Encoding one chunk with tiktoken's rules, plus the per-thread state that caches results.
//!
//! tiktoken's rule: a chunk that is itself a token becomes that token; otherwise start from its
//! bytes and repeatedly merge the adjacent pair whose concatenation has the lowest rank (the
//! leftmost one on ties) until no adjacent pair concatenates to a token. Ranks are token ids.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

/// Longest chunk that [`pack`] turns into an integer key.
const SHORT: usize = 15;

/// Packs a chunk of at most [`SHORT`] bytes and its length into one integer, so that hash
/// lookups of short chunks compare integers instead of calling `memcmp`.
#[inline(always)]
fn pack(chunk: &[u8]) -> u128 {
    let mut buf = [0u8; 16];
    buf[..chunk.len()].copy_from_slice(chunk);
    buf[15] = chunk.len() as u8;
    u128::from_le_bytes(buf)
}

/// The Mersenne prime 2^61 - 1, modulus of [`PolyHash`].
const MERSENNE: u64 = (1 << 61) - 1;

#[inline(always)]
fn mul_mod(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    let s = (p as u64 & MERSENNE) + (p >> 61) as u64;
    if s >= MERSENNE {
        s - MERSENNE
    } else {
        s
    }
}

#[inline(always)]
fn add_mod(a: u64, b: u64) -> u64 {
    let s = a + b;
    if s >= MERSENNE {
        s - MERSENNE
    } else {
        s
    }
}

/// Two polynomial hashes modulo 2^61 - 1 with bases drawn at random per process, so that no
/// file can be crafted to make two different byte strings of equal length collide (the chance
/// of an accidental collision is about `length^2 / 2^122` per comparison).
struct PolyHash {
    bases: (u64, u64),
}

impl PolyHash {
    fn random() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let draw = |salt: u64| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(salt);
            // A base in [2^20, 2^61 - 1).
            (h.finish() % (MERSENNE - (1 << 20))) + (1 << 20)
        };
        Self {
            bases: (draw(1), draw(2)),
        }
    }

    /// `base^i` for `i` in `0..=n`.
    fn powers(&self, n: usize) -> Vec<(u64, u64)> {
        let mut out = Vec::with_capacity(n + 1);
        let mut p = (1u64, 1u64);
        for _ in 0..=n {
            out.push(p);
            p = (mul_mod(p.0, self.bases.0), mul_mod(p.1, self.bases.1));
        }
        out
    }

    /// Fills `out[k]` with the hash of `bytes[..k]` for `k` in `0..=bytes.len()`.
    fn prefixes(&self, bytes: &[u8], out: &mut Vec<(u64, u64)>) {
        out.clear();
        let mut h = (0u64, 0u64);
        out.push(h);
        for &b in bytes {
            let v = u64::from(b) + 1;
            h = (
                add_mod(mul_mod(h.0, self.bases.0), v),
                add_mod(mul_mod(h.1, self.bases.1), v),
            );
            out.push(h);
        }
    }

    /// The hash of `bytes[k..n]` from the prefix hashes of `bytes`.
    #[inline(always)]
    fn substring(
        &self,
        prefix: &[(u64, u64)],
        pows: &[(u64, u64)],
        k: usize,
        n: usize,
    ) -> (u64, u64) {
        let (a, b) = (prefix[n], prefix[k]);
        let p = pows[n - k];
        (
            add_mod(a.0, MERSENNE - mul_mod(b.0, p.0)),
            add_mod(a.1, MERSENNE - mul_mod(b.1, p.1)),
        )
    }
}

/// Lookup tables for encoding: whole chunks and pairs of adjacent tokens.
pub struct MergeTables {
    /// Bytes of every token to its id (the lowest id if two tokens share bytes).
    pub encoder: FxHashMap<Box<[u8]>, u32>,
    /// The same for tokens of at most [`SHORT`] bytes, keyed by [`pack`].
    short: FxHashMap<u128, u32>,
    /// `(left << 32 | right)` to the id of the token that is their concatenation.
    pub pairs: FxHashMap<u64, u32>,
}

impl MergeTables {
    /// Builds the tables from the bytes of every token, indexed by id.
    ///
    /// Runs in time linear in the total bytes of the vocabulary: the pairs table finds, for
    /// every token and every split point, the tokens equal to the prefix and the suffix through
    /// polynomial hashes of the token's prefixes (O(1) per split point) instead of hashing each
    /// prefix and suffix anew (which is quadratic in a long token's length).
    pub fn new(vocab: &[Vec<u8>]) -> Self {
        let mut encoder: FxHashMap<Box<[u8]>, u32> = FxHashMap::default();
        for (id, bytes) in vocab.iter().enumerate() {
            encoder.entry(bytes.as_slice().into()).or_insert(id as u32);
        }
        let hasher = PolyHash::random();
        let longest = vocab.iter().map(Vec::len).max().unwrap_or(0);
        let pows = hasher.powers(longest);
        // (length, hash) of every token to its id (the lowest id if two tokens share bytes).
        let mut by_hash: FxHashMap<(usize, u64, u64), u32> = FxHashMap::default();
        let mut prefix: Vec<(u64, u64)> = Vec::new();
        for (id, bytes) in vocab.iter().enumerate() {
            hasher.prefixes(bytes, &mut prefix);
            let (h1, h2) = prefix[bytes.len()];
            by_hash.entry((bytes.len(), h1, h2)).or_insert(id as u32);
        }
        let mut pairs: FxHashMap<u64, u32> = FxHashMap::default();
        for (id, bytes) in vocab.iter().enumerate().skip(256) {
            let n = bytes.len();
            hasher.prefixes(bytes, &mut prefix);
            for k in 1..n {
                let (p1, p2) = prefix[k];
                let Some(&l) = by_hash.get(&(k, p1, p2)) else {
                    continue;
                };
                let (s1, s2) = hasher.substring(&prefix, &pows, k, n);
                if let Some(&r) = by_hash.get(&(n - k, s1, s2)) {
                    let e = pairs
                        .entry((u64::from(l) << 32) | u64::from(r))
                        .or_insert(id as u32);
                    *e = (*e).min(id as u32);
                }
            }
        }
        let short = encoder
            .iter()
            .filter(|(k, _)| k.len() <= SHORT)
            .map(|(k, &v)| (pack(k), v))
            .collect();
        Self {
            encoder,
            short,
            pairs,
        }
    }

    #[inline(always)]
    fn rank(&self, l: u32, r: u32) -> u32 {
        self.pairs
            .get(&((u64::from(l) << 32) | u64::from(r)))
            .copied()
            .unwrap_or(u32::MAX)
    }

    /// Appends the ids of `chunk` to `out`, merging from bytes (no whole-chunk shortcut).
    pub fn merge_bytes(&self, chunk: &[u8], out: &mut Vec<u32>, scratch: &mut Scratch) {
        if chunk.len() > LARGE {
            self.merge_bytes_large(chunk, out);
            return;
        }
        let ids = &mut scratch.ids;
        let ranks = &mut scratch.ranks;
        ids.clear();
        ids.extend(chunk.iter().map(|&b| u32::from(b)));
        ranks.clear();
        ranks.extend(ids.windows(2).map(|p| self.rank(p[0], p[1])));
        loop {
            let mut best = u32::MAX;
            let mut at = 0;
            for (i, &r) in ranks.iter().enumerate() {
                if r < best {
                    best = r;
                    at = i;
                }
            }
            if best == u32::MAX {
                break;
            }
            ids[at] = best;
            ids.remove(at + 1);
            ranks.remove(at);
            if at < ranks.len() {
                ranks[at] = self.rank(ids[at], ids[at + 1]);
            }
            if at > 0 {
                ranks[at - 1] = self.rank(ids[at - 1], ids[at]);
            }
        }
        out.extend_from_slice(ids);
    }
}

/// Chunks longer than this are merged with a heap (O(n log n)) instead of linear scans.
const LARGE: usize = 128;

impl MergeTables {
    /// The same result as the linear scan, for long chunks: a linked list of pieces and a
    /// min-heap of `(rank, position)`; stale heap entries are skipped when popped.
    fn merge_bytes_large(&self, chunk: &[u8], out: &mut Vec<u32>) {
        const NONE: usize = usize::MAX;
        let n = chunk.len();
        let mut ids: Vec<u32> = chunk.iter().map(|&b| u32::from(b)).collect();
        let mut next: Vec<usize> = (1..=n).map(|i| if i < n { i } else { NONE }).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| if i > 0 { i - 1 } else { NONE }).collect();
        let mut alive = vec![true; n];
        let mut heap: BinaryHeap<Reverse<(u32, usize)>> = (0..n - 1)
            .filter_map(|i| {
                let r = self.rank(ids[i], ids[i + 1]);
                (r != u32::MAX).then_some(Reverse((r, i)))
            })
            .collect();
        while let Some(Reverse((r, i))) = heap.pop() {
            let j = next[i];
            if !alive[i] || j == NONE || self.rank(ids[i], ids[j]) != r {
                continue;
            }
            ids[i] = r;
            alive[j] = false;
            next[i] = next[j];
            if next[j] != NONE {
                prev[next[j]] = i;
                let rr = self.rank(r, ids[next[j]]);
                if rr != u32::MAX {
                    heap.push(Reverse((rr, i)));
                }
            }
            if prev[i] != NONE {
                let p = prev[i];
                let rl = self.rank(ids[p], r);
                if rl != u32::MAX {
                    heap.push(Reverse((rl, p)));
                }
            }
        }
        let mut i = 0;
        while i != NONE {
            out.push(ids[i]);
            i = next[i];
        }
    }
}

/// Reusable buffers for [`MergeTables::merge_bytes`].
#[derive(Default)]
pub struct Scratch {
    ids: Vec<u32>,
    ranks: Vec<u32>,
}

/// Most chunks a thread's cache holds before it is cleared.
const CACHE_LIMIT: usize = 1 << 17;

/// One thread's encoding state: a chunk -> ids cache and scratch buffers.
#[derive(Default)]
pub struct EncodeState {
    cache: FxHashMap<Box<[u8]>, Box<[u32]>>,
    short_cache: FxHashMap<u128, Box<[u32]>>,
    scratch: Scratch,
}

impl EncodeState {
    /// Appends the ids of `chunk` to `out`, using the whole-chunk shortcut and the cache.
    #[inline]
    pub fn encode_chunk(&mut self, tables: &MergeTables, chunk: &[u8], out: &mut Vec<u32>) {
        if chunk.len() == 1 {
            out.push(u32::from(chunk[0]));
            return;
        }
        if chunk.len() <= SHORT {
            let key = pack(chunk);
            if let Some(&id) = tables.short.get(&key) {
                out.push(id);
                return;
            }
            if let Some(ids) = self.short_cache.get(&key) {
                out.extend_from_slice(ids);
                return;
            }
            let start = out.len();
            tables.merge_bytes(chunk, out, &mut self.scratch);
            if self.short_cache.len() >= CACHE_LIMIT {
                self.short_cache.clear();
            }
            self.short_cache.insert(key, out[start..].into());
            return;
        }
        if let Some(&id) = tables.encoder.get(chunk) {
            out.push(id);
            return;
        }
        if let Some(ids) = self.cache.get(chunk) {
            out.extend_from_slice(ids);
            return;
        }
        let start = out.len();
        tables.merge_bytes(chunk, out, &mut self.scratch);
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(chunk.into(), out[start..].into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(extra: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        v.extend(extra.iter().map(|e| e.to_vec()));
        v
    }

    #[test]
    fn merges_lowest_rank_first_by_concatenation() {
        // "bc" (256) then "ab" (257) then "abc" (258) made from "ab"+"c".
        let t = MergeTables::new(&vocab(&[b"bc", b"ab", b"abc"]));
        let mut out = Vec::new();
        t.merge_bytes(b"abc", &mut out, &mut Scratch::default());
        // "bc" merges first, then "a"+"bc" is also "abc" by concatenation.
        assert_eq!(out, vec![258]);
        out.clear();
        t.merge_bytes(b"abab", &mut out, &mut Scratch::default());
        assert_eq!(out, vec![257, 257]);
    }

    #[test]
    fn heap_merge_equals_linear_merge() {
        let t = MergeTables::new(&vocab(&[
            b"ab", b"ba", b"aba", b"bab", b"abab", b"aa", b"aab",
        ]));
        let mut seed = 12345u64;
        for _ in 0..300 {
            let len = LARGE + 1 + (seed % 300) as usize;
            let chunk: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    b"ab"[(seed >> 62) as usize & 1]
                })
                .collect();
            let mut fast = Vec::new();
            t.merge_bytes_large(&chunk, &mut fast);
            assert_eq!(fast, linear(&t, &chunk));
        }
    }

    /// tiktoken's rule written as plainly as possible.
    fn linear(t: &MergeTables, chunk: &[u8]) -> Vec<u32> {
        let mut ids: Vec<u32> = chunk.iter().map(|&b| u32::from(b)).collect();
        loop {
            let best = ids
                .windows(2)
                .enumerate()
                .map(|(i, p)| (t.rank(p[0], p[1]), i))
                .min();
            match best {
                Some((r, i)) if r != u32::MAX => {
                    ids[i] = r;
                    ids.remove(i + 1);
                }
                _ => break,
            }
        }
        ids
    }

    #[test]
    fn pairs_table_equals_naive_construction() {
        // Tokens built by merges over a small alphabet, so that many splits exist.
        let mut seed = 99u64;
        let mut rnd = |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        let mut v: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let alphabet = [b'a' as usize, b'b' as usize, b'c' as usize];
        let mut ids: Vec<usize> = alphabet.to_vec();
        for _ in 0..400 {
            let a = ids[rnd(ids.len() as u64) as usize];
            let b = ids[rnd(ids.len() as u64) as usize];
            let mut t = v[a].clone();
            t.extend_from_slice(&v[b]);
            ids.push(v.len());
            v.push(t);
        }
        let fast = MergeTables::new(&v);
        let mut naive: FxHashMap<u64, u32> = FxHashMap::default();
        for (id, bytes) in v.iter().enumerate().skip(256) {
            for k in 1..bytes.len() {
                let l = fast.encoder.get(&bytes[..k]);
                let r = fast.encoder.get(&bytes[k..]);
                if let (Some(&l), Some(&r)) = (l, r) {
                    let e = naive
                        .entry((u64::from(l) << 32) | u64::from(r))
                        .or_insert(id as u32);
                    *e = (*e).min(id as u32);
                }
            }
        }
        assert!(naive.len() > 400);
        assert_eq!(fast.pairs, naive);
    }

    #[test]
    fn long_tokens_build_in_linear_time() {
        // Doubling tokens "a", "aa", "aaaa", ... up to 2^21 bytes: quadratic work would take
        // minutes, linear work a fraction of a second.
        let mut v: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut last = u32::from(b'a') as usize;
        for _ in 0..21 {
            let t = v[last].repeat(2);
            last = v.len();
            v.push(t);
        }
        let started = std::time::Instant::now();
        let t = MergeTables::new(&v);
        assert!(started.elapsed().as_secs_f64() < 5.0);
        assert_eq!(t.rank(last as u32 - 1, last as u32 - 1), last as u32);
    }

    #[test]
    fn cache_returns_the_same_ids() {
        let t = MergeTables::new(&vocab(&[b"ab", b"cd"]));
        let mut s = EncodeState::default();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        s.encode_chunk(&t, b"abcdx", &mut a);
        s.encode_chunk(&t, b"abcdx", &mut b);
        assert_eq!(a, vec![256, 257, u32::from(b'x')]);
        assert_eq!(a, b);
    }
}
