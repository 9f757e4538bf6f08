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
