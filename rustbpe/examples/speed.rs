//! Rough single-thread timings of splitting, training and encoding on a JSON-lines corpus.
//!
//! Usage: `cargo run --release --example speed -- CORPUS.jsonl [VOCAB]`

use std::time::Instant;

use nanochat_rustbpe::train::train_texts;
use nanochat_rustbpe::{Allowed, Splitter, Tokenizer, DEFAULT_PATTERN};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: speed CORPUS.jsonl [VOCAB]");
    let vocab: usize = args
        .get(2)
        .map_or(32768, |v| v.parse().expect("vocab size"));
    let docs: Vec<String> = std::fs::read_to_string(path)
        .expect("read corpus")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON string per line"))
        .collect();
    let mb = docs.iter().map(String::len).sum::<usize>() as f64 / 1e6;
    let splitter = Splitter::new(DEFAULT_PATTERN).unwrap();
    let t = Instant::now();
    let mut n = 0usize;
    for d in &docs {
        splitter.split(d, |_| n += 1);
    }
    let dt = t.elapsed().as_secs_f64();
    println!("split: {n} chunks, {:.1} MB/s", mb / dt);
    let t = Instant::now();
    let merges = train_texts(&splitter, &docs, vocab - 256);
    println!("train {vocab}: {:.2} s", t.elapsed().as_secs_f64());
    let tok = Tokenizer::new(DEFAULT_PATTERN, merges, vec![]).unwrap();
    let t = Instant::now();
    let mut ntok = 0;
    for d in &docs {
        ntok += tok.encode(d, &Allowed::None).unwrap().len();
    }
    let dt = t.elapsed().as_secs_f64();
    println!("encode: {ntok} tokens, {:.1} MB/s", mb / dt);
    for _ in 0..2 {
        let t = Instant::now();
        let out = tok.encode_batch(&docs, &Allowed::None).unwrap();
        let dt = t.elapsed().as_secs_f64();
        println!("encode_batch: {} docs, {:.1} MB/s", out.len(), mb / dt);
    }
    let t = Instant::now();
    let mut ntok = 0;
    for d in &docs {
        ntok += tok.encode(d, &Allowed::None).unwrap().len();
    }
    let dt = t.elapsed().as_secs_f64();
    println!("encode again: {ntok} tokens, {:.1} MB/s", mb / dt);
}
