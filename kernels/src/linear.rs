//! Products of a few rows with a weight matrix stored in column panels (decode steps).
//!
//! `y = x · W` for `x` of `rows x inner` (a handful of rows: one per sequence in a decode step)
//! and `W` of `inner x cols`, stored as `cols / 16` panels of `inner x 16` floats, each panel
//! contiguous: a panel is read front to back once per group of up to four rows, with the
//! partial sums of a `4 x 16` tile in registers. With one row the product streams the weights
//! (memory bound); with eight it does two passes over each panel, which stays in L1.

use crate::error::{has_avx2_fma, refuse, KernelError};
use crate::omp;

/// Columns per panel.
pub const PANEL: usize = 16;
/// Rows whose partial sums share registers.
const GROUP: usize = 4;

/// The rows `x`: `rows` vectors of `inner` floats, `stride` floats apart.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    data: &'a [f32],
    rows: usize,
    inner: usize,
    stride: usize,
}

impl<'a> Rows<'a> {
    /// A view of `data`; refused when a row would lie outside it.
    pub fn new(
        data: &'a [f32],
        rows: usize,
        inner: usize,
        stride: usize,
    ) -> Result<Self, KernelError> {
        let end = rows
            .checked_sub(1)
            .and_then(|r| r.checked_mul(stride))
            .and_then(|s| s.checked_add(inner));
        match end {
            Some(end) if end <= data.len() && inner > 0 && stride >= inner => Ok(Self {
                data,
                rows,
                inner,
                stride,
            }),
            _ => refuse(format!(
                "{rows} rows of {inner} floats, {stride} apart, do not fit in {} floats",
                data.len()
            )),
        }
    }
}

/// `y[r, c] = sum_k x[r, k] * W[k, c]`, `W` in panels (`panels.len() = cols * inner`, see the
/// module docs), `y` row-major `rows x cols`; the panels are split over `threads` threads.
pub fn panel_matmul(
    x: &Rows<'_>,
    panels: &[f32],
    y: &mut [f32],
    threads: usize,
) -> Result<(), KernelError> {
    let inner = x.inner;
    if panels.is_empty() || !panels.len().is_multiple_of(inner * PANEL) {
        return refuse(format!(
            "{} weights are not whole panels of {inner} x {PANEL}",
            panels.len()
        ));
    }
    let count = panels.len() / (inner * PANEL);
    let cols = count * PANEL;
    if y.len() != x.rows * cols {
        return refuse(format!(
            "y holds {} floats, not {} x {cols}",
            y.len(),
            x.rows
        ));
    }
    let simd = has_avx2_fma();
    let out = omp::SharedOut(y.as_mut_ptr());
    let done = omp::split(count, threads, &|range| {
        for panel in range {
            let weights = &panels[panel * inner * PANEL..(panel + 1) * inner * PANEL];
            // SAFETY: each panel's columns of `y` are written by one thread only; the pointer
            // stays within `y` (`rows x cols`, checked above); `simd` only where the CPU has it.
            unsafe { product(x, weights, out.get().add(panel * PANEL), cols, simd) };
        }
    });
    if !done {
        return refuse("the product failed on a worker thread".to_string());
    }
    Ok(())
}

/// One panel's 16 columns for every row, written at `y` (row stride `cols`).
///
/// # Safety
/// `y + r * cols + 0..16` must be writable for every row `r`; `simd` only on a CPU with AVX2
/// and FMA.
unsafe fn product(x: &Rows<'_>, weights: &[f32], y: *mut f32, cols: usize, simd: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if simd {
            let mut first = 0;
            while first < x.rows {
                let n = GROUP.min(x.rows - first);
                let rows = &x.data[first * x.stride..];
                let at = y.add(first * cols);
                match n {
                    4 => simd::tile::<4>(rows, x.stride, weights, at, cols),
                    3 => simd::tile::<3>(rows, x.stride, weights, at, cols),
                    2 => simd::tile::<2>(rows, x.stride, weights, at, cols),
                    _ => simd::tile::<1>(rows, x.stride, weights, at, cols),
                }
                first += n;
            }
            return;
        }
    }
    for r in 0..x.rows {
        let row = &x.data[r * x.stride..r * x.stride + x.inner];
        let mut acc = [0.0f32; PANEL];
        for (k, &xv) in row.iter().enumerate() {
            let w = &weights[k * PANEL..(k + 1) * PANEL];
            for c in 0..PANEL {
                acc[c] += xv * w[c];
            }
        }
        std::ptr::copy_nonoverlapping(acc.as_ptr(), y.add(r * cols), PANEL);
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::PANEL;
    use std::arch::x86_64::*;

    /// `R` rows (`x`, rows `stride` apart, each at least `weights.len() / 16` long) times one
    /// panel, into `y` (row stride `cols`).
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `y + r * cols + 0..16` writable for `r < R`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile<const R: usize>(
        x: &[f32],
        stride: usize,
        weights: &[f32],
        y: *mut f32,
        cols: usize,
    ) {
        let inner = weights.len() / PANEL;
        assert!(x.len() >= (R - 1) * stride + inner);
        let (px, pw) = (x.as_ptr(), weights.as_ptr());
        let mut lo = [_mm256_setzero_ps(); R];
        let mut hi = [_mm256_setzero_ps(); R];
        for k in 0..inner {
            let w0 = _mm256_loadu_ps(pw.add(k * PANEL));
            let w1 = _mm256_loadu_ps(pw.add(k * PANEL + 8));
            for r in 0..R {
                let xv = _mm256_broadcast_ss(&*px.add(r * stride + k));
                lo[r] = _mm256_fmadd_ps(xv, w0, lo[r]);
                hi[r] = _mm256_fmadd_ps(xv, w1, hi[r]);
            }
        }
        for r in 0..R {
            _mm256_storeu_ps(y.add(r * cols), lo[r]);
            _mm256_storeu_ps(y.add(r * cols + 8), hi[r]);
        }
    }
}

/// `W` (`inner x cols`, row-major) in the panel layout [`panel_matmul`] reads.
pub fn to_panels(w: &[f32], inner: usize, cols: usize) -> Vec<f32> {
    assert_eq!(w.len(), inner * cols);
    assert_eq!(cols % PANEL, 0);
    let mut out = Vec::with_capacity(w.len());
    for p in 0..cols / PANEL {
        for k in 0..inner {
            out.extend_from_slice(&w[k * cols + p * PANEL..k * cols + (p + 1) * PANEL]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::test_floats as floats;

    #[test]
    fn matches_a_double_precision_product() {
        for (rows, inner, cols, threads) in [
            (1, 48, 32, 1),
            (8, 40, 64, 2),
            (5, 7, 16, 3),
            (3, 33, 48, 8),
        ] {
            let stride = inner + 3;
            let x = floats(rows * stride, 1);
            let w = floats(inner * cols, 2);
            let mut y = vec![f32::NAN; rows * cols];
            let view = Rows::new(&x, rows, inner, stride).unwrap();
            panel_matmul(&view, &to_panels(&w, inner, cols), &mut y, threads).unwrap();
            for r in 0..rows {
                for c in 0..cols {
                    let want: f64 = (0..inner)
                        .map(|k| x[r * stride + k] as f64 * w[k * cols + c] as f64)
                        .sum();
                    let got = y[r * cols + c] as f64;
                    assert!((got - want).abs() < 1e-5, "({r}, {c}): {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let x = vec![0.0f32; 16];
        assert!(Rows::new(&x, 2, 8, 9).is_err());
        let rows = Rows::new(&x, 2, 8, 8).unwrap();
        let mut y = vec![0.0f32; 32];
        assert!(panel_matmul(&rows, &vec![0.0; 8 * 15], &mut y, 1).is_err());
        assert!(panel_matmul(&rows, &vec![0.0; 8 * 16], &mut y[..31], 1).is_err());
        assert!(panel_matmul(&rows, &vec![0.0; 8 * 32], &mut y, 1).is_err());
    }
}
