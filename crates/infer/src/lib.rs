//! shuku's inference engine for GGUF files on edge CPUs.
//!
//! * [`tokenizer`]: llama.cpp-compatible tokenizers built from a GGUF file's vocabulary.
//! * [`engine`]: the model itself — [`Engine::load`] maps the file, keeps every weight in the
//!   mapping, and runs llama, qwen2 and gemma3 models with llama.cpp's numerics (activations
//!   quantized like its CPU backend, f16 KV cache). [`Engine`] implements
//!   [`shuku_eval::LogitsSource`], so its perplexity is computed by the same code as the trainer's.

pub mod engine;
pub mod tokenizer;

pub use engine::{
    Arch, Engine, EngineError, EngineOptions, LayerConfig, ModelConfig, RopeStyle, Session,
};
pub use tokenizer::{DecodeOptions, StreamDecoder, Tokenizer, TokenizerError};
