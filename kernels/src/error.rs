//! The one error of the crate: a call refused, with the reason.

use std::fmt;

/// Why a call was refused (shapes, strides or spans that do not fit together, or a worker
/// thread that failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError(pub String);

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KernelError {}

/// `Err(KernelError(message))`.
pub(crate) fn refuse<T>(message: String) -> Result<T, KernelError> {
    Err(KernelError(message))
}

/// Whether the CPU has AVX2 and FMA (the registers the fast paths are written for).
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Deterministic floats in [-1, 1) for the tests.
#[cfg(test)]
pub(crate) fn test_floats(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
