"""Built-in tokenizer plugins: `rustbpe` (our Rust BPE) and `hf-bpe` (HF tokenizers)."""
