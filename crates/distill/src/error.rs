//! The crate's error type.
//!
//! Every failure a user can cause (bad corpus, mismatched vocabularies, a damaged checkpoint,
//! an invalid hyper-parameter) gets its own variant so callers such as `shuku-cli` can report it
//! precisely instead of surfacing a generic tensor error.

use std::path::PathBuf;

/// Errors produced by `shuku-distill`.
#[derive(Debug, thiserror::Error)]
pub enum DistillError {
    /// A tensor operation failed inside candle.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),

    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The corpus produced no tokens at all.
    #[error("the corpus is empty: no tokens were produced from the input files")]
    EmptyCorpus,

    /// The corpus is shorter than a single training sequence.
    #[error("the corpus has {tokens} tokens, fewer than one sequence of {needed} (seq_len + 1)")]
    CorpusTooShort {
        /// Tokens found.
        tokens: usize,
        /// Tokens needed for one packed sequence.
        needed: usize,
    },

    /// A token id does not fit the model's vocabulary (tokenizer and model disagree).
    #[error("token id {token} is out of range for a model vocabulary of {vocab}")]
    TokenOutOfVocab {
        /// Offending token id.
        token: u32,
        /// Model vocabulary size.
        vocab: usize,
    },

    /// Two vocabularies that must agree do not (tokenizer vs model, student vs teacher).
    #[error("vocabulary mismatch: {what} ({left} vs {right})")]
    VocabMismatch {
        /// What was compared.
        what: &'static str,
        /// First size.
        left: usize,
        /// Second size.
        right: usize,
    },

    /// Tensors that must have matching shapes do not.
    #[error("shape mismatch in {what}: {left:?} vs {right:?}")]
    ShapeMismatch {
        /// What was compared.
        what: String,
        /// First shape.
        left: Vec<usize>,
        /// Second shape.
        right: Vec<usize>,
    },

    /// A hyper-parameter is outside its valid range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// The tokenizer failed on some input.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),

    /// The checkpoint file is not a readable checkpoint (truncated, corrupt, foreign file).
    #[error("corrupt checkpoint {path}: {reason}")]
    CorruptCheckpoint {
        /// Checkpoint path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The checkpoint is readable but does not match the model/optimizer it is loaded into.
    #[error("checkpoint {path} does not match the model: {reason}")]
    CheckpointMismatch {
        /// Checkpoint path.
        path: PathBuf,
        /// Which tensor or field disagrees, and how.
        reason: String,
    },

    /// Training produced a non-finite loss or gradient norm.
    #[error("training diverged at step {step}: {what}")]
    Diverged {
        /// Optimizer step (0-based) at which it happened.
        step: usize,
        /// What became non-finite.
        what: String,
    },

    /// shuku-model rejected a model (config, weights, save).
    #[error("model error: {0}")]
    Model(#[from] shuku_model::ModelError),

    /// A safetensors file could not be written.
    #[error("safetensors error on {path}: {message}")]
    Safetensors {
        /// File involved.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// A training log could not be written.
    #[error("could not serialize log record: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, DistillError>;

impl DistillError {
    /// Wrap an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DistillError::Io {
            path: path.into(),
            source,
        }
    }
}
