//! nanochat-kernels: CPU kernels for the generation hot path.
//!
//! [`attention::decode_attention`] is the attention of one new token per row over the keys and
//! values a KV cache holds for that row: a batch of dot products and weighted sums that reads
//! every cached key and value once, streaming, where a general attention kernel spends most of
//! its time on setup and packing for a query of one row.

pub mod attention;
pub mod error;
pub mod linear;
pub mod omp;

pub use attention::{decode_attention, Heads};
pub use error::KernelError;
pub use linear::{panel_matmul, Rows, PANEL};

#[cfg(feature = "python")]
mod python;
