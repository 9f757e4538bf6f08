//! shuku (縮, "to shrink"): make a language model small and fast at the edge.
//!
//! This crate is the one dependency an application adds. It re-exports shuku's crates, each behind
//! a default-on feature, and adds [`pipeline`]: the measurements and the stage table of a
//! compress-then-deploy run.
//!
//! | module | crate | what it does |
//! |---|---|---|
//! | [`gguf`] | `shuku-gguf` | GGUF read/write with llama.cpp's conventions |
//! | [`model`] | `shuku-model` | the full-precision model of every family, HF I/O, GGUF export/import |
//! | [`prune`] | `shuku-prune` | unstructured, N:M and structured pruning |
//! | [`distill`] | `shuku-distill` | training and knowledge distillation |
//! | [`quantize`] | `shuku-quantize` | llama-quantize's presets (same bytes), imatrix, GPTQ, size budgets |
//! | [`infer`] | `shuku-infer` | the GGUF inference engine for CPUs |
//! | [`serve`] | `shuku-serve` | an OpenAI-compatible server: continuous batching, an edge → cloud router |
//! | [`export`] | `shuku-export` | ONNX Runtime (onnxruntime-genai) and MLX (mlx-lm) exports |
//! | [`quants`] | `shuku-quants` | ggml's block formats and quantizers |
//! | [`eval`] | `shuku-eval` | llama-perplexity's perplexity and KL-divergence protocol |
//!
//! The whole journey, from a full-precision folder to a GGUF file generating text (the
//! `compress_and_deploy` example does this with a measured table per stage):
//!
//! ```no_run
//! use shuku::candle::Device;
//! use shuku::distill::Distillation;
//! use shuku::infer::{Engine, EngineOptions};
//! use shuku::model::{Llama, Tokenizer};
//! use shuku::prune::{calibration_samples, Pruner};
//! use shuku::quantize::{chunks, collect_imatrix, preset, ChunkOptions, Quantizer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let original = Llama::from_hf_dir("assets/shuku-base", &Device::Cpu)?;
//! let text = std::fs::read_to_string("assets/corpus/shakespeare.txt")?;
//! let tokens = Tokenizer::from_file("assets/shuku-base")?.encode(&text[..400_000], true)?;
//!
//! // Structured pruning: a quarter of every FFN, widths kept multiples of 256 for the K-quants.
//! let pruned = Pruner::structured("ffn=0.25".parse()?)
//!     .round_to(256)
//!     .calibration(calibration_samples(&tokens, 32, 128)?)
//!     .run(Llama::from_hf_dir("assets/shuku-base", &Device::Cpu)?)?
//!     .model;
//! // Recovery: a short distillation with the original as the teacher.
//! Distillation::new(100, 128).run(&pruned, Some(&original), &tokens)?;
//! pruned.save_hf_dir("small", Some("assets/shuku-base".as_ref()), true)?;
//!
//! // Quantization with an importance matrix from the same text, then the GGUF engine.
//! let calib = chunks(&tokens, ChunkOptions { n_ctx: 128, max_chunks: Some(32), bos: None });
//! let imatrix = collect_imatrix(&pruned, &calib, "shakespeare", &mut |_, _| {})?;
//! Quantizer::new(preset("Q4_K_M")?).imatrix("shakespeare", imatrix).overwrite(true).run("small", "small.gguf")?;
//! let engine = Engine::load("small.gguf", EngineOptions::default())?;
//! let prompt = engine.tokenizer().encode("ROMEO:", true, true)?;
//! println!("{}", engine.tokenizer().decode(&engine.generate_greedy(&prompt, 32)?));
//! # Ok(()) }
//! ```

/// candle, the tensor library under the full-precision crates (its `cuda` and `metal` features are
/// this crate's).
pub use candle_core as candle;
/// candle's layers and optimizers.
pub use candle_nn;

#[doc(inline)]
pub use shuku_eval as eval;
#[doc(inline)]
pub use shuku_quants as quants;

#[cfg(feature = "distill")]
#[doc(inline)]
pub use shuku_distill as distill;
#[cfg(feature = "gguf")]
#[doc(inline)]
pub use shuku_gguf as gguf;
#[cfg(feature = "infer")]
#[doc(inline)]
pub use shuku_infer as infer;
#[cfg(feature = "model")]
#[doc(inline)]
pub use shuku_model as model;
#[cfg(feature = "prune")]
#[doc(inline)]
pub use shuku_prune as prune;
#[cfg(feature = "quantize")]
#[doc(inline)]
pub use shuku_quantize as quantize;
#[cfg(feature = "serve")]
#[doc(inline)]
pub use shuku_serve as serve;

/// Exports to the other edge runtimes: onnxruntime-genai folders and mlx-lm folders.
#[cfg(feature = "export")]
#[doc(inline)]
pub use shuku_export as export;

#[cfg(all(feature = "model", feature = "infer"))]
pub mod pipeline;

/// The user's guide (docs/guide.md), its examples compiled and run as tests.
#[doc = include_str!("../docs/guide.md")]
pub mod guide {}
