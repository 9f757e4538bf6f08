//! The one error type of `shuku-model`.

use std::path::PathBuf;

/// What is wrong with one field of a model configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigProblem {
    /// The field is absent.
    #[error("missing")]
    Missing,
    /// The field has the wrong JSON type.
    #[error("expected {0}")]
    WrongType(&'static str),
    /// A size that must be positive is zero.
    #[error("must be greater than zero")]
    Zero,
    /// A size must divide another.
    #[error("{value} does not divide {into} ({what})")]
    NotDivisible {
        /// The divisor.
        value: usize,
        /// The dividend.
        into: usize,
        /// Which relation failed, in words.
        what: &'static str,
    },
    /// A per-layer list has the wrong length.
    #[error("has {found} entries, expected one per layer ({expected})")]
    LayerCount {
        /// `num_hidden_layers`.
        expected: usize,
        /// Entries found.
        found: usize,
    },
    /// `model_type` names an architecture this crate does not implement.
    #[error(
        "unknown model_type {0:?} (supported: llama, mistral, qwen2, qwen3, phi3, gemma3_text)"
    )]
    UnknownModelType(String),
    /// A key shuku neither reads nor knows to leave the computation unchanged.
    #[error("not understood by shuku, and it may change the model's computation (remove it only if it does not)")]
    NotUnderstood,
    /// The value is valid for HF but not supported here.
    #[error("unsupported value: {0}")]
    Unsupported(String),
}

/// Every failure of `shuku-model`, naming the file, field or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file does not parse.
    #[error("{file}: invalid JSON: {source}")]
    Json {
        /// The file.
        file: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A configuration field is missing or invalid.
    #[error("{file}: field `{field}`: {problem}")]
    Config {
        /// The file (or `<gguf>` / `<memory>`).
        file: String,
        /// The field.
        field: String,
        /// What is wrong.
        problem: ConfigProblem,
    },
    /// A tensor has a shape other than the config implies.
    #[error("tensor {tensor}: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// HF tensor name.
        tensor: String,
        /// Shape implied by the config.
        expected: Vec<usize>,
        /// Shape found.
        found: Vec<usize>,
    },
    /// A tensor the config requires is absent.
    #[error("{file}: missing tensor {tensor}")]
    MissingTensor {
        /// Where it was looked for.
        file: String,
        /// HF tensor name.
        tensor: String,
    },
    /// A tensor the model would silently ignore: refused, since it means config and weights disagree.
    #[error("{file}: unexpected tensor {tensor} (not part of this config)")]
    UnexpectedTensor {
        /// Where it came from.
        file: String,
        /// Its name.
        tensor: String,
    },
    /// A tensor cannot be written in the requested GGUF form.
    #[error("tensor {tensor}: {message}")]
    Export {
        /// The tensor (GGUF or HF name).
        tensor: String,
        /// Why not.
        message: String,
    },
    /// A tensor in a dtype that cannot be converted to f32.
    #[error("{file}: tensor {tensor} has unsupported dtype {dtype}")]
    UnsupportedDType {
        /// The file.
        file: String,
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: String,
    },
    /// A safetensors file is malformed.
    #[error("{file}: safetensors: {message}")]
    Safetensors {
        /// The file.
        file: String,
        /// The parser's message.
        message: String,
    },
    /// `tokenizer.json` failed to load or encode.
    #[error("{file}: tokenizer: {message}")]
    Tokenizer {
        /// The file.
        file: String,
        /// The library's message.
        message: String,
    },
    /// A byte-level BPE tokenizer whose llama.cpp check hash is not in llama.cpp's table, so its
    /// `tokenizer.ggml.pre` is unknown.
    #[error("{}: unknown BPE pre-tokenizer (llama.cpp check hash {hash}); pass --tokenizer-pre NAME with the llama.cpp pre-tokenizer it uses", file.display())]
    UnknownPreTokenizer {
        /// The `tokenizer.json`.
        file: PathBuf,
        /// SHA-256 of the check text's token ids, as llama.cpp computes it.
        hash: String,
    },
    /// The hub could not provide a file.
    #[error("hub {repo}@{revision}: {file}: {message}")]
    Hub {
        /// `org/name`.
        repo: String,
        /// Branch, tag or commit.
        revision: String,
        /// File asked for.
        file: String,
        /// What went wrong.
        message: String,
    },
    /// Offline (HF_HUB_OFFLINE) and the file is not in the local cache.
    #[error("hub {repo}@{revision}: {file} is not in the local cache {} and HF_HUB_OFFLINE is set", cache.display())]
    HubOffline {
        /// `org/name`.
        repo: String,
        /// Branch, tag or commit.
        revision: String,
        /// File asked for.
        file: String,
        /// The cache directory searched.
        cache: PathBuf,
    },
    /// Saving would overwrite a non-empty directory.
    #[error("{}: directory exists and is not empty (pass overwrite to replace it)", path.display())]
    OutputExists {
        /// The directory.
        path: PathBuf,
    },
    /// Input that cannot be evaluated (empty batch, token id out of range, context overflow).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A [`crate::ShrinkPlan`] that cannot be applied to the model (unknown source layer, no layers,
    /// out-of-range or unsorted indices, nothing left of a layer, broken GQA grouping, or a masked copy of
    /// reordered layers).
    #[error("invalid shrink plan: layer {layer}: {problem}")]
    InvalidPlan {
        /// Index of the plan layer at fault (the new model's layer; 0 for a plan with no layers).
        layer: usize,
        /// What is wrong, naming the source layer and indices involved.
        problem: String,
    },
    /// A numerical method failed (a matrix that stays singular after damping, non-finite values).
    #[error("numerical failure: {0}")]
    Numerical(String),
    /// A GGUF file could not be read or lacks architecture metadata.
    #[error("gguf: {0}")]
    Gguf(#[from] shuku_gguf::Error),
    /// The evaluation protocol failed.
    #[error(transparent)]
    Eval(#[from] shuku_eval::EvalError),
    /// A tensor operation failed.
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(file: &str, field: impl Into<String>, problem: ConfigProblem) -> Self {
        Self::Config {
            file: file.to_string(),
            field: field.into(),
            problem,
        }
    }
}
