//! BPE training: counting chunks in parallel, then the merge loop with incremental pair counts.
//!
//! Semantics (identical to PyPI `rustbpe` 0.1.0): every merge takes the pair of adjacent tokens
//! with the highest count summed over all chunk occurrences; ties go to the smallest pair
//! `(left, right)`. The new token gets id `256 + merge index`. Inside a chunk a merge replaces
//! non-overlapping occurrences from left to right.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::pretok::Splitter;

/// A pair of token ids packed as `left << 32 | right`, so that integer order is pair order.
type PairKey = u64;

#[inline(always)]
fn key(a: u32, b: u32) -> PairKey {
    (u64::from(a) << 32) | u64::from(b)
}

#[inline(always)]
fn unkey(k: PairKey) -> (u32, u32) {
    ((k >> 32) as u32, k as u32)
}

/// Counts how often each chunk occurs in the texts fed to it.
pub struct ChunkCounter {
    counts: FxHashMap<Box<str>, i64>,
}

impl Default for ChunkCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkCounter {
    /// An empty counter.
    pub fn new() -> Self {
        Self {
            counts: FxHashMap::default(),
        }
    }

    /// Splits `texts` with `splitter` on all cores and adds their chunk counts.
    pub fn add_batch<S: AsRef<str> + Sync>(&mut self, splitter: &Splitter, texts: &[S]) {
        let threads = rayon::current_num_threads().max(1);
        let total: usize = texts.iter().map(|t| t.as_ref().len()).sum();
        // Contiguous groups of roughly equal byte size, a few per thread for balance.
        let target = total / (threads * 4) + 1;
        let mut groups: Vec<&[S]> = Vec::new();
        let (mut start, mut acc) = (0, 0);
        for (i, t) in texts.iter().enumerate() {
            acc += t.as_ref().len();
            if acc >= target {
                groups.push(&texts[start..=i]);
                start = i + 1;
                acc = 0;
            }
        }
        if start < texts.len() {
            groups.push(&texts[start..]);
        }
        let locals: Vec<FxHashMap<&str, i64>> = groups
            .par_iter()
            .map(|group| {
                let mut m: FxHashMap<&str, i64> = FxHashMap::default();
                for t in group.iter() {
                    splitter.split(t.as_ref(), |c| *m.entry(c).or_insert(0) += 1);
                }
                m
            })
            .collect();
        for local in locals {
            for (chunk, n) in local {
                if let Some(v) = self.counts.get_mut(chunk) {
                    *v += n;
                } else {
                    self.counts.insert(chunk.into(), n);
                }
            }
        }
    }

    /// Splits `text` from byte `from` (0, or where the previous part of the same text ended)
    /// until about `max_bytes` bytes are counted; returns where it stopped (`text.len()` at
    /// the end). Counting a huge text part by part counts exactly what [`Self::add_batch`]
    /// would, in steps of bounded time.
    pub fn add_part(
        &mut self,
        splitter: &Splitter,
        text: &str,
        from: usize,
        max_bytes: usize,
    ) -> usize {
        let mut m: FxHashMap<&str, i64> = FxHashMap::default();
        let end = splitter.split_part(text, from, max_bytes, |c| *m.entry(c).or_insert(0) += 1);
        for (chunk, n) in m {
            if let Some(v) = self.counts.get_mut(chunk) {
                *v += n;
            } else {
                self.counts.insert(chunk.into(), n);
            }
        }
        end
    }

    /// Number of distinct chunks seen so far.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether no chunk has been seen.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The distinct chunks of two or more bytes as byte-id sequences, with their counts.
    pub fn into_words(self) -> (Vec<Vec<u32>>, Vec<i64>) {
        self.counts
            .into_iter()
            .filter(|(c, _)| c.len() >= 2)
            .map(|(c, n)| (c.bytes().map(u32::from).collect(), n))
            .unzip()
    }
}

/// Pair counts and the chunks each pair occurs in, for the initial set of words.
fn initial_pairs(
    words: &[Vec<u32>],
    counts: &[i64],
) -> (FxHashMap<PairKey, i64>, FxHashMap<PairKey, Vec<u32>>) {
    let threads = rayon::current_num_threads().max(1);
    let per = words.len() / threads + 1;
    let locals: Vec<_> = words
        .par_chunks(per)
        .enumerate()
        .map(|(ci, group)| {
            let mut pc: FxHashMap<PairKey, i64> = FxHashMap::default();
            let mut pos: FxHashMap<PairKey, Vec<u32>> = FxHashMap::default();
            for (j, w) in group.iter().enumerate() {
                let wi = (ci * per + j) as u32;
                let n = counts[wi as usize];
                for p in w.windows(2) {
                    let k = key(p[0], p[1]);
                    *pc.entry(k).or_insert(0) += n;
                    let v = pos.entry(k).or_default();
                    if v.last() != Some(&wi) {
                        v.push(wi);
                    }
                }
            }
            (pc, pos)
        })
        .collect();
    let mut iter = locals.into_iter();
    let (mut pc, mut pos) = iter.next().unwrap_or_default();
    for (lpc, lpos) in iter {
        for (k, n) in lpc {
            *pc.entry(k).or_insert(0) += n;
        }
        for (k, v) in lpos {
            pos.entry(k).or_default().extend(v);
        }
    }
    (pc, pos)
}

/// Learns up to `num_merges` merges from `words` (byte-id sequences) weighted by `counts`.
///
/// `progress(done, total)` is called every `every` merges and once at the end, `tick()` after
/// every merge (for cheap checks such as a pending Ctrl-C); an error from either stops training
/// and is returned. Training stops early when no pair is left, and after at most
/// `MAX_VOCAB_SIZE - 256` merges whatever `num_merges` asks for.
pub fn learn_merges<E>(
    mut words: Vec<Vec<u32>>,
    counts: Vec<i64>,
    num_merges: usize,
    every: usize,
    progress: &mut dyn FnMut(usize, usize) -> Result<(), E>,
    tick: &mut dyn FnMut() -> Result<(), E>,
) -> Result<Vec<(u32, u32)>, E> {
    let limit = num_merges.min(crate::tokenizer::MAX_VOCAB_SIZE - 256);
    let (mut pair_counts, mut positions) = initial_pairs(&words, &counts);
    // Long chunks are merged through per-chunk pair positions, so that a merge costs in
    // proportion to its occurrences, not to the chunk's length (a chunk of a megabyte would
    // otherwise be rescanned by every merge that touches it).
    let mut long: FxHashMap<u32, LongWord> = FxHashMap::default();
    for (wi, w) in words.iter_mut().enumerate() {
        if w.len() > LONG {
            long.insert(wi as u32, LongWord::new(std::mem::take(w)));
        }
    }
    let mut heap: BinaryHeap<(i64, Reverse<PairKey>)> = pair_counts
        .iter()
        .filter(|(_, &n)| n > 0)
        .map(|(&k, &n)| (n, Reverse(k)))
        .collect();
    // Never reserve more than there can be merges: one per distinct pair at most.
    let mut merges: Vec<(u32, u32)> = Vec::with_capacity(limit.min(heap.len()));
    let every = every.max(1);
    // Pairs created by the current merge (they all contain its new id): count and chunks.
    let mut fresh: FxHashMap<PairKey, (i64, Vec<u32>)> = FxHashMap::default();

    while merges.len() < limit {
        let Some((n, Reverse(k))) = heap.pop() else {
            break;
        };
        let current = pair_counts.get(&k).copied().unwrap_or(0);
        if current != n {
            if current > 0 {
                heap.push((current, Reverse(k)));
            }
            continue;
        }
        if n <= 0 {
            break;
        }
        let (a, b) = unkey(k);
        let new_id = 256 + merges.len() as u32;
        merges.push((a, b));
        pair_counts.remove(&k);
        let where_ = positions.remove(&k).unwrap_or_default();

        for &wi in &where_ {
            if let Some(lw) = long.get_mut(&wi) {
                let cnt = counts[wi as usize];
                lw.merge(k, new_id, &mut |pk, delta| {
                    adjust(&mut pair_counts, &mut fresh, new_id, pk, delta * cnt, wi)
                });
                continue;
            }
            let w = &mut words[wi as usize];
            let cnt = counts[wi as usize];
            let len = w.len();
            let mut r = 0;
            let mut out = 0;
            while r < len {
                if r + 1 < len && w[r] == a && w[r + 1] == b {
                    if out > 0 {
                        let x = w[out - 1];
                        adjust(&mut pair_counts, &mut fresh, new_id, key(x, a), -cnt, wi);
                        adjust(
                            &mut pair_counts,
                            &mut fresh,
                            new_id,
                            key(x, new_id),
                            cnt,
                            wi,
                        );
                    }
                    if r + 2 < len {
                        let y = w[r + 2];
                        adjust(&mut pair_counts, &mut fresh, new_id, key(b, y), -cnt, wi);
                        adjust(
                            &mut pair_counts,
                            &mut fresh,
                            new_id,
                            key(new_id, y),
                            cnt,
                            wi,
                        );
                    }
                    w[out] = new_id;
                    r += 2;
                } else {
                    w[out] = w[r];
                    r += 1;
                }
                out += 1;
            }
            w.truncate(out);
        }
        for (fk, (fc, fpos)) in fresh.drain() {
            if fc > 0 {
                pair_counts.insert(fk, fc);
                positions.insert(fk, fpos);
                heap.push((fc, Reverse(fk)));
            }
        }
        if merges.len().is_multiple_of(every) {
            progress(merges.len(), num_merges)?;
        }
        tick()?;
    }
    if !merges.len().is_multiple_of(every) || merges.is_empty() {
        progress(merges.len(), num_merges)?;
    }
    Ok(merges)
}

/// Chunks longer than this many ids are merged as [`LongWord`]s.
const LONG: usize = 128;

/// Marks a dead slot in a [`LongWord`] (its id was merged into the slot before it).
const DEAD: u32 = u32::MAX;

/// A long chunk as a doubly linked list of ids with, for every pair, the slots where it starts.
///
/// Position lists may hold stale slots (the pair there was since merged away or changed); a
/// slot is checked when its pair is merged. Every new pair gets its slot recorded, so every
/// live occurrence is in its pair's list.
struct LongWord {
    ids: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    at: FxHashMap<PairKey, Vec<u32>>,
}

impl LongWord {
    fn new(ids: Vec<u32>) -> Self {
        let n = ids.len() as u32;
        let next = (1..=n).map(|i| if i < n { i } else { DEAD }).collect();
        let prev = (0..n).map(|i| if i > 0 { i - 1 } else { DEAD }).collect();
        let mut at: FxHashMap<PairKey, Vec<u32>> = FxHashMap::default();
        for (i, p) in ids.windows(2).enumerate() {
            at.entry(key(p[0], p[1])).or_default().push(i as u32);
        }
        Self {
            ids,
            next,
            prev,
            at,
        }
    }

    /// Replaces the occurrences of pair `k` by `new_id` from left to right (non-overlapping, as
    /// the flat-vector merge does), calling `change(pair, +1 | -1)` for every pair count that
    /// changes, in the same order as the flat-vector merge.
    fn merge(&mut self, k: PairKey, new_id: u32, change: &mut dyn FnMut(PairKey, i64)) {
        let (a, b) = unkey(k);
        let Some(mut slots) = self.at.remove(&k) else {
            return;
        };
        slots.sort_unstable();
        slots.dedup();
        for p in slots {
            let pu = p as usize;
            let q = self.next[pu];
            if self.ids[pu] != a || q == DEAD || self.ids[q as usize] != b {
                continue;
            }
            let x = self.prev[pu];
            if x != DEAD {
                let xid = self.ids[x as usize];
                change(key(xid, a), -1);
                change(key(xid, new_id), 1);
                self.at.entry(key(xid, new_id)).or_default().push(x);
            }
            let y = self.next[q as usize];
            if y != DEAD {
                let yid = self.ids[y as usize];
                change(key(b, yid), -1);
                change(key(new_id, yid), 1);
                self.at.entry(key(new_id, yid)).or_default().push(p);
                self.prev[y as usize] = p;
            }
            self.ids[pu] = new_id;
            self.ids[q as usize] = DEAD;
            self.next[pu] = y;
        }
    }
}

/// Adds `delta` to the count of pair `k`: pairs containing `new_id` live in `fresh` (and note
/// chunk `wi` as a place they occur), all others in `pair_counts`.
#[inline(always)]
fn adjust(
    pair_counts: &mut FxHashMap<PairKey, i64>,
    fresh: &mut FxHashMap<PairKey, (i64, Vec<u32>)>,
    new_id: u32,
    k: PairKey,
    delta: i64,
    wi: u32,
) {
    let (l, r) = unkey(k);
    if l == new_id || r == new_id {
        let e = fresh.entry(k).or_default();
        e.0 += delta;
        if delta > 0 && e.1.last() != Some(&wi) {
            e.1.push(wi);
        }
    } else if let Some(v) = pair_counts.get_mut(&k) {
        *v += delta;
    }
}

/// Learns merges from `texts` in one call (counting plus merge loop); for tests and Rust users.
pub fn train_texts<S: AsRef<str> + Sync>(
    splitter: &Splitter,
    texts: &[S],
    num_merges: usize,
) -> Vec<(u32, u32)> {
    let mut counter = ChunkCounter::new();
    counter.add_batch(splitter, texts);
    let (words, counts) = counter.into_words();
    let mut none = |_: usize, _: usize| Ok::<(), ()>(());
    let mut no_tick = || Ok::<(), ()>(());
    learn_merges(
        words,
        counts,
        num_merges,
        usize::MAX,
        &mut none,
        &mut no_tick,
    )
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretok::DEFAULT_PATTERN;

    /// Slow reference: recount every pair from scratch for every merge.
    fn reference(texts: &[&str], num_merges: usize) -> Vec<(u32, u32)> {
        let splitter = Splitter::new(DEFAULT_PATTERN).unwrap();
        let mut words: Vec<Vec<u32>> = Vec::new();
        for t in texts {
            splitter.split(t, |c| words.push(c.bytes().map(u32::from).collect()));
        }
        let mut merges = Vec::new();
        for m in 0..num_merges {
            let mut pc: std::collections::BTreeMap<(u32, u32), i64> = Default::default();
            for w in &words {
                for p in w.windows(2) {
                    *pc.entry((p[0], p[1])).or_insert(0) += 1;
                }
            }
            let Some((&best, _)) = pc.iter().max_by(|x, y| x.1.cmp(y.1).then(y.0.cmp(x.0))) else {
                break;
            };
            let new_id = 256 + m as u32;
            for w in &mut words {
                let mut out = Vec::new();
                let mut i = 0;
                while i < w.len() {
                    if i + 1 < w.len() && (w[i], w[i + 1]) == best {
                        out.push(new_id);
                        i += 2;
                    } else {
                        out.push(w[i]);
                        i += 1;
                    }
                }
                *w = out;
            }
            merges.push(best);
        }
        merges
    }

    #[test]
    fn incremental_training_matches_recounting() {
        let texts = [
            "aaaa aaaaa aaa banana bandana ananas",
            "the cat sat on the mat, the hat!\n\nthe end",
            "zzzzzzzzzzz 11 111 1111 abababab abab",
        ];
        let splitter = Splitter::new(DEFAULT_PATTERN).unwrap();
        assert_eq!(train_texts(&splitter, &texts, 60), reference(&texts, 60));
    }

    #[test]
    fn long_chunks_train_like_short_ones() {
        // Chunks far over LONG ids (runs of letters), with repeats and self-overlapping pairs.
        let mut seed = 7u64;
        let mut texts: Vec<String> = Vec::new();
        for len in [300usize, 700, 1500, 129, 2000] {
            let word: String = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ['a', 'a', 'b', 'c'][(seed >> 62) as usize]
                })
                .collect();
            texts.push(format!("{word} {word} x{word}"));
        }
        texts.push("a".repeat(1000) + " " + &"ab".repeat(600));
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let splitter = Splitter::new(DEFAULT_PATTERN).unwrap();
        assert_eq!(train_texts(&splitter, &refs, 150), reference(&refs, 150));
    }

    #[test]
    fn counting_in_parts_equals_counting_whole() {
        let splitter = Splitter::new(DEFAULT_PATTERN).unwrap();
        let text = "the cat sat on the mat, the hat!\n\nthe end 12345 ".repeat(50);
        let mut whole = ChunkCounter::new();
        whole.add_batch(&splitter, &[text.as_str()]);
        let mut parts = ChunkCounter::new();
        let mut from = 0;
        while from < text.len() {
            from = parts.add_part(&splitter, &text, from, 37);
        }
        let sorted = |c: ChunkCounter| {
            let mut v: Vec<_> = c.counts.into_iter().collect();
            v.sort();
            v
        };
        assert_eq!(sorted(parts), sorted(whole));
    }

    #[test]
    fn stops_when_no_pairs_are_left() {
        let splitter = Splitter::new(DEFAULT_PATTERN).unwrap();
        let merges = train_texts(&splitter, &["ab ab"], 100);
        assert_eq!(merges, vec![(97, 98), (32, 256)]);
    }

    #[test]
    fn progress_is_reported() {
        let mut seen = Vec::new();
        let mut cb = |d: usize, t: usize| {
            seen.push((d, t));
            Ok::<(), ()>(())
        };
        let words = vec![vec![1, 2, 3, 4, 5]];
        let mut ticks = 0;
        let mut tick = || {
            ticks += 1;
            Ok::<(), ()>(())
        };
        learn_merges(words, vec![1], 4, 2, &mut cb, &mut tick).unwrap();
        assert_eq!(ticks, 4);
        assert_eq!(seen, vec![(2, 4), (4, 4)]);
    }
}
