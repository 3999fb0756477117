//! nanochat-rustbpe: byte-level BPE with fast parallel training and tiktoken-identical encoding.

pub mod bpe;
pub mod error;
pub mod persist;
pub mod pretok;
pub mod tokenizer;
pub mod train;
pub mod unicode;

pub use error::BpeError;
pub use pretok::{Splitter, DEFAULT_PATTERN};
pub use tokenizer::{Allowed, Tokenizer, MAX_VOCAB_SIZE};

#[cfg(feature = "python")]
mod python;
