//! Typed errors of vocabulary loading and tokenisation.

use thiserror::Error;

/// Why a tokenizer could not be built, or a text not be encoded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// A required `tokenizer.ggml.*` key is absent.
    #[error("missing GGUF key `{0}`")]
    MissingKey(&'static str),
    /// A key holds a value of the wrong type or length.
    #[error("invalid GGUF key `{key}`: {why}")]
    InvalidKey {
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// `tokenizer.ggml.model` names a tokenizer llama.cpp does not know.
    #[error("unknown tokenizer model `{0}`")]
    UnknownModel(String),
    /// A tokenizer llama.cpp knows but shuku does not implement (WPM, UGM, RWKV, ...).
    #[error("unsupported tokenizer model `{model}`")]
    Unsupported {
        /// The `tokenizer.ggml.model` value.
        model: String,
    },
    /// `tokenizer.ggml.pre` names a pre-tokenizer shuku does not know.
    #[error("unknown or unsupported pre-tokenizer `{0}`")]
    UnknownPre(String),
    /// A `tokenizer.ggml.merges` entry is not two space-separated parts.
    #[error("malformed BPE merge #{index}: {merge:?}")]
    MalformedMerge {
        /// Index of the merge.
        index: usize,
        /// Its text.
        merge: String,
    },
    /// The vocabulary is empty.
    #[error("empty vocabulary")]
    EmptyVocab,
    /// A pre-tokenizer regex failed to compile or to run.
    #[error("pre-tokenizer regex: {0}")]
    Regex(String),
    /// Reading the GGUF metadata failed.
    #[error(transparent)]
    Gguf(#[from] shuku_gguf::Error),
}

/// Result alias of this module.
pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;
