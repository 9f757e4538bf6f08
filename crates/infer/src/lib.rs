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
//!
//! A chat turn streamed from a GGUF file, then the file's perplexity on a text:
//!
//! ```no_run
//! use shuku_eval::{perplexity, PerplexityProtocol};
//! use shuku_infer::{ChatMessage, Engine, EngineOptions, GenerationParams, SamplerConfig};
//!
//! let mut engine = Engine::load("model-Q4_K_M.gguf", EngineOptions {
//!     threads: 4,
//!     context: 2048,
//!     ..Default::default()
//! })?;
//!
//! // The model's own chat template (ChatML when the file has none).
//! let prompt = engine.render_chat(&[ChatMessage::new("user", "Name three rivers.")], true)?;
//! let params = GenerationParams {
//!     max_tokens: 128,
//!     sampler: SamplerConfig::default(), // llama.cpp's default chain
//!     seed: Some(42),
//!     ..Default::default()
//! };
//! let mut session = engine.new_session();
//! let mut stream = engine.generate(&mut session, prompt, params)?;
//! for token in &mut stream {
//!     print!("{}", token?.text_piece);
//! }
//! let summary = stream.finish()?;
//! println!("\n[{}] {}", summary.finish_reason, summary.metrics);
//!
//! // The same protocol and numbers as llama-perplexity.
//! let text = std::fs::read_to_string("wiki.test.raw")?;
//! let tokens = engine.tokenizer().encode(&text, true, false)?;
//! let report = perplexity(&mut engine, &tokens, &PerplexityProtocol::new(512), None)?;
//! println!("PPL = {:.4} +/- {:.5}", report.ppl, report.ppl_stderr);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Chat templates need no model file:
//!
//! ```
//! use shuku_infer::{ChatMessage, ChatTemplate};
//!
//! let chatml = ChatTemplate::chatml("<s>", "</s>");
//! let text = chatml.render(&[ChatMessage::new("user", "Hi!")], true)?;
//! assert_eq!(text, "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
//! # Ok::<(), shuku_infer::ChatTemplateError>(())
//! ```

pub mod cache;
pub mod chat;
pub mod engine;
pub mod generate;
pub mod grammar;
pub mod metrics;
pub mod sampler;
pub mod sequence;
pub mod speculative;
pub mod tokenizer;

pub use cache::{CachedResponse, PrefixCache, ResponseCache};
pub use chat::{ChatMessage, ChatTemplate, ChatTemplateError};
pub use engine::{
    Arch, BatchItem, Engine, EngineError, EngineOptions, LayerConfig, ModelConfig, RopeScaling,
    RopeStyle, Session,
};
pub use generate::{FinishReason, Generate, GeneratedToken, Generation, GenerationParams, Prompt};
pub use grammar::{generate_json, GrammarError, GrammarVocab, JsonSchemaConstraint};
pub use metrics::GenerationMetrics;
pub use sampler::{Rng, Sampler, SamplerConfig};
pub use sequence::{Sequence, SequenceStep};
pub use speculative::{
    Draft, DraftModel, DraftRequest, Drafter, PromptLookup, SpeculativeError, SpeculativeOutput,
    SpeculativeStats, TokenDist, Verdict,
};
pub use tokenizer::{DecodeOptions, StreamDecoder, Tokenizer, TokenizerError};
