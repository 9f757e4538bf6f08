//! Importance-based pruning of llama-family models (shuku-model's [`Llama`](shuku_model::Llama)).
//!
//! * **Unstructured and `N:M` sparsity** ([`unstructured`]): magnitude, Wanda and SparseGPT, layer by
//!   layer on calibration text, with uniform or OWL-shaped ([`owl`]) layer sparsities. Zeros are
//!   stored like any weight: the file does not shrink, but the sparsity is real and is the step
//!   before structure or a sparse runtime.
//! * **Structured removal** ([`structured`]): attention heads (GQA-aware), FFN channels and whole
//!   layers by importance (magnitude, activations or first-order Taylor), physically removed with
//!   shuku-model's surgery, so the model, its GGUF file and its decoding all shrink.
//! * [`Pruner`] composes them, with an iterative schedule and a recovery hook between steps (e.g. a
//!   short distillation from the unpruned model with shuku-distill).
//!
//! Embeddings, norms and the output head are never pruned. The column sweep SparseGPT needs is
//! shuku-model's [`linalg`](shuku_model::linalg), shared with GPTQ.
//!
//! ```
//! use candle_core::Device;
//! use shuku_model::{Llama, LlamaConfig};
//! use shuku_prune::{calibration_samples, Method, Pruner};
//!
//! // A tiny random model stands in for one loaded with `Llama::from_hf_dir`.
//! let config = LlamaConfig::from_json_str(r#"{"model_type": "llama", "vocab_size": 64,
//!     "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4,
//!     "num_key_value_heads": 2, "intermediate_size": 48}"#, "config.json")?;
//! // Calibration: windows of tokenized text (here, made-up tokens).
//! let text: Vec<u32> = (0..256).map(|i| (i * 11 % 64) as u32).collect();
//! let samples = calibration_samples(&text, 4, 32)?;
//!
//! // Wanda: half of every block linear's weights become zeros, chosen by |W|·‖x‖ per output row.
//! let sparse = Pruner::unstructured(Method::Wanda, 0.5)
//!     .calibration(samples.clone())
//!     .run(Llama::random(config.clone(), 0, &Device::Cpu)?)?;
//! let report = sparse.report.sparsity.as_ref().unwrap();
//! assert!((report.overall() - 0.5).abs() < 1e-9);
//!
//! // Structured: the least influential layer and a quarter of the FFN channels leave the model.
//! let small = Pruner::structured("layers=1,ffn=0.25".parse()?)
//!     .calibration(samples)
//!     .run(Llama::random(config, 0, &Device::Cpu)?)?;
//! assert_eq!(small.model.config().layers.len(), 3);
//! assert!(small.report.params_after < small.report.params_before);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod calibration;
mod error;
mod layerwise;
pub mod mask;
pub mod owl;
mod pruner;
pub mod report;
pub mod structured;
pub mod unstructured;
mod weights;

pub use calibration::calibration_samples;
pub use error::{PruneError, Result};
pub use mask::{NmPattern, Selection};
pub use owl::Owl;
pub use pruner::{ProgressFn, PruneReport, Pruned, Pruner, RecoverFn};
pub use report::{parameter_count, SparsityReport, TensorSparsity};
pub use structured::allocate::Scope;
pub use structured::importance::Importance;
pub use structured::{plan_structured, GqaPolicy, StructuredConfig, StructuredSpec};
pub use unstructured::{
    prune_unstructured, sparsegpt_prune, wanda_prune, wanda_scores, Method, UnstructuredConfig,
};
