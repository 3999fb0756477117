//! Attention of one query token per row over each row's cached keys and values.

use crate::error::{refuse, KernelError};
use crate::omp;

/// A read-only strided view of `rows x heads x len` vectors of `dim` contiguous floats:
/// vector `(r, h, l)` starts at `r * strides[0] + h * strides[1] + l * strides[2]` in `data`
/// (strides in elements).
#[derive(Debug, Clone, Copy)]
pub struct Heads<'a> {
    data: &'a [f32],
    shape: [usize; 3],
    strides: [usize; 3],
    dim: usize,
}

impl<'a> Heads<'a> {
    /// A view of `data`; refused when a vector of the shape would lie outside `data`.
    pub fn new(
        data: &'a [f32],
        shape: [usize; 3],
        strides: [usize; 3],
        dim: usize,
    ) -> Result<Self, KernelError> {
        if shape.contains(&0) || dim == 0 {
            return refuse(format!("empty view: shape {shape:?}, dim {dim}"));
        }
        match Self::extent(shape, strides, dim) {
            Some(end) if end <= data.len() => Ok(Self {
                data,
                shape,
                strides,
                dim,
            }),
            _ => refuse(format!(
                "a view of shape {shape:?} x {dim} with strides {strides:?} needs more than the {} floats given",
                data.len()
            )),
        }
    }

    /// The number of elements from the first float to one past the last one the view reads.
    pub fn extent(shape: [usize; 3], strides: [usize; 3], dim: usize) -> Option<usize> {
        shape.iter().zip(strides).try_fold(dim, |end, (&n, s)| {
            n.checked_sub(1)?.checked_mul(s)?.checked_add(end)
        })
    }

    /// Where vector `(row, head, pos)` would start (possibly past the view: for prefetching).
    fn address(&self, row: usize, head: usize, pos: usize) -> *const f32 {
        let at = row * self.strides[0] + head * self.strides[1] + pos * self.strides[2];
        self.data.as_ptr().wrapping_add(at)
    }

    fn vector(&self, row: usize, head: usize, pos: usize) -> &'a [f32] {
        let at = row * self.strides[0] + head * self.strides[1] + pos * self.strides[2];
        &self.data[at..at + self.dim]
    }
}

/// For each row `r` and query head `h`: `softmax(scale * q·k_j) · v_j` over the keys
/// `j` in `spans[r]` (half-open) of key/value head `h / (heads / kv_heads)`, written to
/// `out[(r * heads + h) * dim ..]`.
///
/// `q` is `rows x heads x 1`, `k` and `v` are `rows x kv_heads x len`, all with the same `dim`;
/// `out` holds `rows * heads * dim` floats. The work is split over `threads` threads (the
/// calling one included) by blocks of (row, head) pairs.
pub fn decode_attention(
    q: &Heads<'_>,
    k: &Heads<'_>,
    v: &Heads<'_>,
    out: &mut [f32],
    spans: &[(usize, usize)],
    scale: f32,
    threads: usize,
) -> Result<(), KernelError> {
    let [rows, heads, one] = q.shape;
    let [_, kv_heads, len] = k.shape;
    let dim = q.dim;
    if one != 1 {
        return refuse(format!("one query per row and head, not {one}"));
    }
    if k.shape != v.shape || k.dim != v.dim {
        return refuse(format!(
            "keys {:?} x {} and values {:?} x {} differ",
            k.shape, k.dim, v.shape, v.dim
        ));
    }
    if k.shape[0] != rows || k.dim != dim {
        return refuse(format!(
            "queries {:?} x {dim} do not match keys {:?} x {}",
            q.shape, k.shape, k.dim
        ));
    }
    if heads % kv_heads != 0 {
        return refuse(format!(
            "{heads} query heads do not share {kv_heads} key/value heads evenly"
        ));
    }
    if spans.len() != rows {
        return refuse(format!("{} spans for {rows} rows", spans.len()));
    }
    if let Some((r, &(lo, hi))) = spans
        .iter()
        .enumerate()
        .find(|(_, &(lo, hi))| lo >= hi || hi > len)
    {
        return refuse(format!(
            "row {r}: keys {lo}..{hi} is empty or beyond the {len} held"
        ));
    }
    if out.len() != rows * heads * dim {
        return refuse(format!(
            "out holds {} floats, not {rows} x {heads} x {dim}",
            out.len()
        ));
    }
    let job = Job {
        q,
        k,
        v,
        spans,
        scale,
        group: heads / kv_heads,
        heads,
    };
    let base = omp::SharedOut(out.as_mut_ptr());
    let done = omp::split(rows * heads, threads, &|items| {
        // SAFETY: the ranges are disjoint, so are their blocks of `out` (which outlives the
        // call), and each range is run by exactly one thread.
        let chunk = unsafe {
            std::slice::from_raw_parts_mut(base.get().add(items.start * dim), items.len() * dim)
        };
        job.run(items.start, chunk);
    });
    if !done {
        return refuse("the attention kernel failed on a worker thread".to_string());
    }
    Ok(())
}

/// One call's inputs, shared by its threads.
struct Job<'a, 'b> {
    q: &'b Heads<'a>,
    k: &'b Heads<'a>,
    v: &'b Heads<'a>,
    spans: &'b [(usize, usize)],
    scale: f32,
    group: usize,
    heads: usize,
}

impl Job<'_, '_> {
    /// Items `first..` (one `dim`-wide block of `out` each).
    fn run(&self, first: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if crate::error::has_avx2_fma() {
            // SAFETY: the CPU has the features the function is compiled for.
            unsafe { self.run_avx2(first, out) };
            return;
        }
        self.items::<false>(first, out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, first: usize, out: &mut [f32]) {
        self.items::<true>(first, out);
    }

    /// The items, with fused multiply-adds where `FMA` (the caller checked the CPU has them).
    #[inline(always)]
    fn items<const FMA: bool>(&self, first: usize, out: &mut [f32]) {
        let dim = self.q.dim;
        let mut scores = Vec::new();
        for (i, o) in out.chunks_exact_mut(dim).enumerate() {
            let item = first + i;
            let (row, head) = (item / self.heads, item % self.heads);
            let kv_head = head / self.group;
            let (lo, hi) = self.spans[row];
            let query = self.q.vector(row, head, 0);
            scores.clear();
            let ahead = PREFETCH_BYTES.div_ceil(dim * 4);
            scores.extend((lo..hi).map(|j| {
                if FMA {
                    // keys and values a few rows on: both streams in flight at once
                    prefetch(self.k.address(row, kv_head, j + ahead), dim);
                    prefetch(self.v.address(row, kv_head, j + ahead), dim);
                }
                dot::<FMA>(query, self.k.vector(row, kv_head, j)) * self.scale
            }));
            let top = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            scores.iter_mut().for_each(|s| *s = exp(*s - top));
            let total: f32 = scores.iter().sum();
            o.fill(0.0);
            let full = scores.len() / 4 * 4;
            for (c, p) in scores[..full].chunks_exact(4).enumerate() {
                let j = lo + 4 * c;
                let values = [0, 1, 2, 3].map(|t| self.v.vector(row, kv_head, j + t));
                axpy4::<FMA>(o, [p[0], p[1], p[2], p[3]], values);
            }
            for (t, &p) in scores[full..].iter().enumerate() {
                let x = self.v.vector(row, kv_head, lo + full + t);
                o.iter_mut()
                    .zip(x)
                    .for_each(|(y, &x)| *y = madd::<FMA>(p, x, *y));
            }
            let inv = 1.0 / total;
            o.iter_mut().for_each(|x| *x *= inv);
        }
    }
}

/// How far ahead of the keys being read the kernel asks for keys and values (bytes).
const PREFETCH_BYTES: usize = 2048;

/// Ask for the `floats` floats at `at` to be brought into the cache (a hint: never faults,
/// whatever the address).
#[inline(always)]
fn prefetch(at: *const f32, floats: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for line in (0..floats).step_by(16) {
            // SAFETY: prefetching reads nothing and cannot fault.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(line) as *const i8) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, floats);
}

/// `a * b + c`, fused when `FMA`.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `a · b`: with `FMA` (AVX2 and FMA present) in 256-bit registers, else portable.
#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: `FMA` is only set on a CPU with AVX2 and FMA (see `Job::run`).
        return unsafe { simd::dot(a, b) };
    }
    dot_portable::<FMA>(a, b)
}

/// `a · b` with 16 partial sums.
#[inline(always)]
fn dot_portable<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
    let mut tail = 0.0f32;
    for (x, y) in a16.remainder().iter().zip(b16.remainder()) {
        tail = madd::<FMA>(*x, *y, tail);
    }
    for (x, y) in a16.zip(b16) {
        for i in 0..16 {
            acc[i] = madd::<FMA>(x[i], y[i], acc[i]);
        }
    }
    let mut width = 16;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0] + tail
}

/// `o += p[0] * x[0] + p[1] * x[1] + p[2] * x[2] + p[3] * x[3]`.
#[inline(always)]
fn axpy4<const FMA: bool>(o: &mut [f32], p: [f32; 4], x: [&[f32]; 4]) {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: as in `dot`.
        return unsafe { simd::axpy4(o, p, x) };
    }
    let n = o.len();
    let (x0, x1, x2, x3) = (&x[0][..n], &x[1][..n], &x[2][..n], &x[3][..n]);
    for d in 0..n {
        let y = madd::<FMA>(p[0], x0[d], o[d]);
        let y = madd::<FMA>(p[1], x1[d], y);
        let y = madd::<FMA>(p[2], x2[d], y);
        o[d] = madd::<FMA>(p[3], x3[d], y);
    }
}

/// `e^x` for `x <= 0` (softmax weights), to about 2 ulp, without branches or calls so that a
/// loop over scores vectorises: `x = n ln 2 + r` with `|r| <= ln 2 / 2`, a degree-6 Taylor
/// polynomial for `e^r`, and `2^n` built from its exponent bits (0 below `e^-87`).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.max(-87.0);
    // round to nearest by adding and removing 1.5 * 2^23 (vectorises, unlike `round`)
    const SHIFT: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + SHIFT) - SHIFT;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 720.0;
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = p * r + c;
    }
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// AVX2 + FMA versions of the inner loops (8 floats per register).
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// `a · b` (`a` and `b` of one length).
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
            s1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                s1,
            );
            i += 16;
        }
        if i + 8 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
            i += 8;
        }
        let s = _mm256_add_ps(s0, s1);
        let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        let mut total = _mm_cvtss_f32(s);
        while i < n {
            total = (*pa.add(i)).mul_add(*pb.add(i), total);
            i += 1;
        }
        total
    }

    /// `o += p[0] * x[0] + ... + p[3] * x[3]` (each `x[t]` at least as long as `o`).
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy4(o: &mut [f32], p: [f32; 4], x: [&[f32]; 4]) {
        let n = o.len();
        assert!(x.iter().all(|x| x.len() >= n));
        let w = p.map(|p| _mm256_set1_ps(p));
        let po = o.as_mut_ptr();
        let mut d = 0;
        while d + 8 <= n {
            let mut y = _mm256_loadu_ps(po.add(d));
            for t in 0..4 {
                y = _mm256_fmadd_ps(w[t], _mm256_loadu_ps(x[t].as_ptr().add(d)), y);
            }
            _mm256_storeu_ps(po.add(d), y);
            d += 8;
        }
        while d < n {
            let mut y = *po.add(d);
            for t in 0..4 {
                y = p[t].mul_add(x[t][d], y);
            }
            *po.add(d) = y;
            d += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::test_floats as floats;

    /// The same attention in f64, one (row, head) at a time, from contiguous buffers.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        rows: usize,
        heads: usize,
        kv_heads: usize,
        len: usize,
        dim: usize,
        spans: &[(usize, usize)],
        scale: f32,
    ) -> Vec<f32> {
        let mut out = vec![0.0f32; rows * heads * dim];
        for r in 0..rows {
            for h in 0..heads {
                let kh = h / (heads / kv_heads);
                let qv = &q[(r * heads + h) * dim..][..dim];
                let (lo, hi) = spans[r];
                let at = |j: usize| ((r * kv_heads + kh) * len + j) * dim;
                let s: Vec<f64> = (lo..hi)
                    .map(|j| {
                        let kv = &k[at(j)..][..dim];
                        qv.iter()
                            .zip(kv)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let top = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - top).exp()).collect();
                let total: f64 = e.iter().sum();
                for d in 0..dim {
                    let y: f64 = (lo..hi).zip(&e).map(|(j, p)| p * v[at(j) + d] as f64).sum();
                    out[(r * heads + h) * dim + d] = (y / total) as f32;
                }
            }
        }
        out
    }

    fn check(rows: usize, heads: usize, kv_heads: usize, dim: usize, threads: usize) {
        let len = 37;
        let q = floats(rows * heads * dim, 1);
        let k = floats(rows * kv_heads * len * dim, 2);
        let v = floats(rows * kv_heads * len * dim, 3);
        let spans: Vec<(usize, usize)> = (0..rows).map(|r| (r % 5, len - r % 7)).collect();
        let scale = 1.0 / (dim as f32).sqrt();
        let qh = Heads::new(&q, [rows, heads, 1], [heads * dim, dim, dim], dim).unwrap();
        let strides = [kv_heads * len * dim, len * dim, dim];
        let kh = Heads::new(&k, [rows, kv_heads, len], strides, dim).unwrap();
        let vh = Heads::new(&v, [rows, kv_heads, len], strides, dim).unwrap();
        let mut out = vec![f32::NAN; rows * heads * dim];
        decode_attention(&qh, &kh, &vh, &mut out, &spans, scale, threads).unwrap();
        let want = reference(&q, &k, &v, rows, heads, kv_heads, len, dim, &spans, scale);
        for (i, (a, b)) in out.iter().zip(&want).enumerate() {
            assert!((a - b).abs() < 1e-5, "item {i}: {a} vs {b}");
        }
    }

    #[test]
    fn exp_is_within_a_few_ulp() {
        for i in 0..=100_000 {
            let x = -87.0 * i as f32 / 100_000.0;
            let (got, want) = (exp(x), (x as f64).exp());
            assert!(
                ((got as f64 - want) / want).abs() < 3e-7,
                "exp({x}) = {got}, not {want}"
            );
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), exp(-87.0));
    }

    #[test]
    fn matches_a_double_precision_reference() {
        check(3, 4, 4, 64, 1);
        check(8, 3, 3, 64, 2);
        check(5, 6, 2, 20, 3); // grouped heads, a width that is not a multiple of 16
        check(2, 2, 1, 7, 8); // more threads than items
    }

    #[test]
    fn refuses_spans_and_shapes_that_do_not_fit() {
        let data = vec![0.0f32; 64];
        let q = Heads::new(&data, [2, 1, 1], [4, 4, 4], 4).unwrap();
        let k = Heads::new(&data, [2, 1, 3], [12, 12, 4], 4).unwrap();
        let mut out = vec![0.0f32; 8];
        let err = decode_attention(&q, &k, &k, &mut out, &[(0, 3), (2, 2)], 1.0, 1);
        assert!(err.unwrap_err().0.contains("row 1"));
        let err = decode_attention(&q, &k, &k, &mut out, &[(0, 4), (0, 1)], 1.0, 1);
        assert!(err.is_err());
        let err = decode_attention(&q, &k, &k, &mut out[..4], &[(0, 3), (0, 1)], 1.0, 1);
        assert!(err.is_err());
        assert!(Heads::new(&data, [2, 2, 9], [32, 16, 4], 4).is_err());
        assert!(Heads::new(&data, [0, 1, 1], [4, 4, 4], 4).is_err());
    }
}
