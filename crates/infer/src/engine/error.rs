//! The engine's typed errors: every way a file or a request can be refused, naming what is wrong.

use shuku_gguf::TensorType;

use crate::tokenizer::TokenizerError;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The GGUF file could not be read or a metadata key has the wrong type.
    #[error(transparent)]
    Gguf(#[from] shuku_gguf::Error),
    /// The tokenizer could not be built from the file's vocabulary.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// `general.architecture` names a model family the engine has no forward pass for.
    #[error("unsupported architecture `{0}` (supported: llama, deci, qwen2, qwen3, gemma3, phi3)")]
    UnsupportedArchitecture(String),
    /// A required metadata key is absent.
    #[error("missing GGUF key `{0}`")]
    MissingKey(String),
    /// A metadata value is present but unusable.
    #[error("invalid GGUF key `{key}`: {why}")]
    InvalidKey {
        /// The key.
        key: String,
        /// What is wrong with it.
        why: String,
    },
    /// A required tensor is absent.
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    /// A tensor's element type has no kernel.
    #[error("tensor `{name}` has type {ttype}, which the engine does not support")]
    UnsupportedTensorType {
        /// Tensor name.
        name: String,
        /// Its type.
        ttype: TensorType,
    },
    /// A tensor's shape disagrees with the hyper-parameters.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?} (ggml order)")]
    BadShape {
        /// Tensor name.
        name: String,
        /// `[ne0, ne1]` expected from the metadata.
        expected: Vec<u64>,
        /// Its dimensions in the file.
        found: Vec<u64>,
    },
    /// The file holds a tensor that the family's forward pass has no use for, where running without
    /// it would silently compute another model (llama.cpp refuses such files too).
    #[error("tensor `{name}` is not used: {why}")]
    UnusedTensor {
        /// Tensor name.
        name: String,
        /// Why the model has no place for it.
        why: String,
    },
    /// A tensor's bytes cannot be read by the kernels (misaligned or not a whole number of blocks).
    #[error("tensor `{name}`: {why}")]
    BadTensorData {
        /// Tensor name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// More tokens than the session's context holds.
    #[error("context overflow: {needed} positions needed, the context holds {context}")]
    ContextOverflow {
        /// Positions the request would occupy.
        needed: usize,
        /// Context length of the session.
        context: usize,
    },
    /// A token id outside the vocabulary.
    #[error("token id {token} is outside the vocabulary of {vocab}")]
    TokenOutOfRange {
        /// The id.
        token: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// Constrained sampling failed (a schema's document cannot be continued).
    #[error("JSON schema constraint: {0}")]
    Constraint(Box<crate::grammar::GrammarError>),
    /// A request that cannot be served (for example an empty token list).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The worker thread pool could not be created.
    #[error("cannot start {threads} worker threads: {why}")]
    ThreadPool {
        /// Threads asked for.
        threads: usize,
        /// The OS's answer.
        why: String,
    },
}

/// Result alias of the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl From<crate::grammar::GrammarError> for EngineError {
    fn from(e: crate::grammar::GrammarError) -> Self {
        EngineError::Constraint(Box::new(e))
    }
}
