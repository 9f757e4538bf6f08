//! shuku's inference engine for GGUF files on edge CPUs.
//!
//! * [`tokenizer`]: llama.cpp-compatible tokenizers built from a GGUF file's vocabulary.
//! * [`engine`]: the model itself — [`Engine::load`] maps the file, keeps every weight in the
//!   mapping, and runs llama, qwen2, qwen3, gemma3 and phi3 models with llama.cpp's numerics
//!   (activations quantized like its CPU backend, f16 KV cache). [`Engine`] implements
//!   [`shuku_eval::LogitsSource`], so its perplexity is computed by the same code as the trainer's.
//! * [`generate`]: streaming generation ([`Engine::generate`]) with stop strings and a
//!   [`Generation`] summary; [`sampler`]: llama.cpp's default sampling chain with a seeded
//!   generator; [`metrics`]: time to first token, speeds, latency percentiles, peak memory.
//! * [`chat`]: the model's chat template rendered with minijinja ([`Engine::render_chat`]);
//!   [`cache`]: prompt-prefix reuse across requests and a response cache.
//! * [`grammar`]: sampling constrained to a JSON schema ([`JsonSchemaConstraint`]).

pub mod cache;
pub mod chat;
pub mod engine;
pub mod generate;
pub mod grammar;
pub mod metrics;
pub mod sampler;
pub mod tokenizer;

pub use cache::{CachedResponse, PrefixCache, ResponseCache};
pub use chat::{ChatMessage, ChatTemplate, ChatTemplateError};
pub use engine::{
    Arch, Engine, EngineError, EngineOptions, LayerConfig, ModelConfig, RopeScaling, RopeStyle,
    Session,
};
pub use generate::{FinishReason, Generate, GeneratedToken, Generation, GenerationParams, Prompt};
pub use grammar::{generate_json, GrammarError, GrammarVocab, JsonSchemaConstraint};
pub use metrics::GenerationMetrics;
pub use sampler::{Rng, Sampler, SamplerConfig};
pub use tokenizer::{DecodeOptions, StreamDecoder, Tokenizer, TokenizerError};
