//! Unicode character classes `\p{L}`, `\p{N}` and `\s` as fast lookup tables, and UTF-8 decoding.

use std::sync::OnceLock;

/// Class bit of `\p{L}`.
pub const LETTER: u8 = 1;
/// Class bit of `\p{N}`.
pub const NUMBER: u8 = 2;
/// Class bit of `\s`.
pub const SPACE: u8 = 4;

/// Unicode classes `\p{L}`, `\p{N}` and `\s`, taken from `regex-syntax` so that they match the
/// regex engine's own tables exactly.
pub struct Classes {
    /// Class bits for every code point of the Basic Multilingual Plane.
    bmp: Vec<u8>,
    /// Sorted, non-overlapping `(start, end_inclusive, bits)` ranges above the BMP.
    astral: Vec<(u32, u32, u8)>,
}

fn class_ranges(pattern: &str) -> Vec<(u32, u32)> {
    let hir = regex_syntax::parse(pattern).expect("valid class pattern");
    match hir.kind() {
        regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(cls)) => cls
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        _ => unreachable!("pattern {pattern} is a Unicode class"),
    }
}

/// The class tables, built on first use.
pub fn classes() -> &'static Classes {
    static CLASSES: OnceLock<Classes> = OnceLock::new();
    CLASSES.get_or_init(|| {
        let mut bmp = vec![0u8; 0x10000];
        let mut astral_points: Vec<(u32, u32, u8)> = Vec::new();
        for (pattern, bit) in [(r"\p{L}", LETTER), (r"\p{N}", NUMBER), (r"\s", SPACE)] {
            for (start, end) in class_ranges(pattern) {
                for cp in start..=end.min(0xFFFF) {
                    bmp[cp as usize] |= bit;
                }
                if end > 0xFFFF {
                    astral_points.push((start.max(0x10000), end, bit));
                }
            }
        }
        Classes {
            bmp,
            astral: merge_astral(astral_points),
        }
    })
}

/// Turns possibly overlapping class ranges into sorted, disjoint ranges with combined bits.
fn merge_astral(ranges: Vec<(u32, u32, u8)>) -> Vec<(u32, u32, u8)> {
    let mut cuts: Vec<u32> = ranges.iter().flat_map(|&(s, e, _)| [s, e + 1]).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out: Vec<(u32, u32, u8)> = Vec::new();
    for w in cuts.windows(2) {
        let (s, e) = (w[0], w[1] - 1);
        let bits = ranges
            .iter()
            .filter(|&&(rs, re, _)| rs <= s && e <= re)
            .fold(0u8, |acc, &(_, _, b)| acc | b);
        if bits != 0 {
            out.push((s, e, bits));
        }
    }
    out
}

/// Class bits (`LETTER | NUMBER | SPACE`) of code point `cp`.
#[inline]
pub fn class_of(cp: u32) -> u8 {
    let c = classes();
    if cp < 0x10000 {
        c.bmp[cp as usize]
    } else {
        match c.astral.binary_search_by(|&(s, e, _)| {
            if e < cp {
                std::cmp::Ordering::Less
            } else if s > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        }) {
            Ok(i) => c.astral[i].2,
            Err(_) => 0,
        }
    }
}

/// Decodes the UTF-8 character starting at byte `i` of valid UTF-8 `b`: (code point, length).
#[inline(always)]
pub fn char_at(b: &[u8], i: usize) -> (u32, usize) {
    let b0 = b[i] as u32;
    if b0 < 0x80 {
        (b0, 1)
    } else if b0 < 0xE0 {
        (((b0 & 0x1F) << 6) | (b[i + 1] as u32 & 0x3F), 2)
    } else if b0 < 0xF0 {
        (
            ((b0 & 0x0F) << 12) | ((b[i + 1] as u32 & 0x3F) << 6) | (b[i + 2] as u32 & 0x3F),
            3,
        )
    } else {
        (
            ((b0 & 0x07) << 18)
                | ((b[i + 1] as u32 & 0x3F) << 12)
                | ((b[i + 2] as u32 & 0x3F) << 6)
                | (b[i + 3] as u32 & 0x3F),
            4,
        )
    }
}
