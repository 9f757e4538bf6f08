//! shuku's shared full-precision llama-family model.
//!
//! * [`LlamaConfig`]: the one parser of HF `config.json`, with per-layer widths for pruned models.
//! * [`Llama`]: a differentiable f32 forward (weights are candle `Var`s, every op backpropagates), a KV cache
//!   for generation, and an observer hook for calibration statistics ([`Calibration`]).
//! * HF folders and the hub: [`Llama::from_hf_dir`], [`Llama::from_hub`], [`Llama::save_hf_dir`].
//! * Hessian-aware compression support: [`linalg`] (GPTQ's damped inverse-Hessian factor and the
//!   column sweep shared by GPTQ and SparseGPT), and a block-by-block forward ([`Llama::embed`],
//!   [`Llama::forward_block`], [`Llama::head`], [`Llama::set_weight`]) for sequential layer-wise passes.
//! * Model surgery: [`Llama::shrink`] removes attention heads (GQA-aware), FFN channels and whole layers
//!   following a [`ShrinkPlan`], shared by structured pruning and layer-dropping distillation.
//! * Evaluation through `shuku-eval`: `Llama` is a [`shuku_eval::LogitsSource`].
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use shuku_model::{KvCache, Llama, LlamaConfig};
//!
//! let config = LlamaConfig::from_json_str(r#"{
//!     "model_type": "llama", "vocab_size": 32, "hidden_size": 16, "num_hidden_layers": 2,
//!     "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 24
//! }"#, "config.json")?;
//! let model = Llama::random(config, 0, &Device::Cpu)?;
//! let tokens = Tensor::new(&[[1u32, 5, 7]], &Device::Cpu)?;
//! let logits = model.forward(&tokens, None)?; // [1, 3, 32]
//! assert_eq!(logits.dims(), &[1, 3, 32]);
//! let continuation = model.generate_greedy(&[1, 5, 7], 4)?;
//! assert_eq!(continuation.len(), 4);
//! # Ok::<(), shuku_model::ModelError>(())
//! ```

mod calibration;
mod config;
mod error;
mod evaluation;
pub mod export;
pub mod fused;
mod gguf;
mod hf;
mod import;
mod layout;
pub mod linalg;
mod model;
pub mod ops;
mod rng;
mod safetensors_dir;
mod staged_dir;
mod surgery;
pub mod threads;
mod tokenizer;
pub use calibration::{Calibration, CalibrationOptions, LinearStats};
pub use config::{Activation, LayerDims, LlamaConfig, ModelType, RopeScaling};
pub use error::{ConfigProblem, ModelError, Result};
pub use hf::{copy_tokenizer, load_safetensors, resolve_hub_dir};
pub use import::{gguf_to_hf_dir, write_vocab_gguf, VOCAB_GGUF};
pub use layout::{SliceBy, TensorRole, TensorSpec};
pub use model::{BeforeGroup, HeadInputLoss, KvCache, LinearObserver, Llama};
pub use safetensors_dir::{SafetensorsDir, TensorEntry};
pub use staged_dir::StagedDir;
pub use surgery::{KeptLayer, ShrinkPlan};
pub use tokenizer::tokenizer_metadata;
pub use tokenizer::Tokenizer;
