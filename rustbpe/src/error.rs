//! The crate's error type.

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum BpeError {
    /// The split pattern does not compile.
    #[error("invalid split pattern {0}")]
    Pattern(String),
    /// A training or construction argument is out of range.
    #[error("{0}")]
    Invalid(String),
    /// A token id is not in the vocabulary.
    #[error("token id {0} is not in the vocabulary")]
    UnknownId(u32),
    /// A saved tokenizer could not be read.
    #[error("not a nanochat-rustbpe tokenizer file ({0})")]
    Format(String),
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
