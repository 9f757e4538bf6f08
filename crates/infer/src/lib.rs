//! shuku's inference engine for GGUF files on edge CPUs.
//!
//! So far: [`tokenizer`], llama.cpp-compatible tokenizers built from a GGUF file's vocabulary.

pub mod tokenizer;

pub use tokenizer::{DecodeOptions, StreamDecoder, Tokenizer, TokenizerError};
