//! The errors of whole-model quantization: each names the file and, where there is one, the
//! tensor.

use std::path::PathBuf;

use shuku_quants::QuantType;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// Reading or writing a GGUF file failed.
    #[error(transparent)]
    Gguf(#[from] shuku_gguf::Error),
    /// Reading the HF folder failed.
    #[error(transparent)]
    Model(#[from] shuku_model::ModelError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A preset name shuku does not know.
    #[error("unknown preset `{name}` (known: {known})")]
    UnknownPreset {
        /// What was asked for.
        name: String,
        /// The presets there are.
        known: String,
    },
    /// A preset llama.cpp knows but shuku does not write.
    #[error("preset {preset} is not supported")]
    UnsupportedPreset {
        /// The preset.
        preset: String,
    },
    /// A type whose block does not divide a tensor's row length, with no fallback type.
    #[error("tensor {tensor}: row length {row_length} is not a multiple of the {ty} block size and {ty} has no fallback type")]
    NoFallback {
        /// The tensor.
        tensor: String,
        /// The type asked for.
        ty: QuantType,
        /// The tensor's row length.
        row_length: usize,
    },
    /// A block tensor name whose layer number is outside the model.
    #[error("tensor {tensor}: layer number outside the model's {n_layer} layers")]
    BadLayer {
        /// The tensor.
        tensor: String,
        /// The model's layer count.
        n_layer: usize,
    },
    /// The input holds a type shuku cannot read.
    #[error("{}: tensor {tensor} has type {ty}, which shuku cannot read", file.display())]
    UnreadableType {
        /// The input file.
        file: PathBuf,
        /// The tensor.
        tensor: String,
        /// The type's name.
        ty: String,
    },
    /// The input is already quantized and requantizing was not allowed.
    #[error("{}: tensor {tensor} is already {ty}; requantizing loses quality twice (pass --allow-requantize to do it anyway)", file.display())]
    Requantize {
        /// The input file.
        file: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: QuantType,
    },
    /// The preset needs an importance matrix for this tensor and none was given.
    #[error("tensor {tensor}: {ty} in this preset needs an importance matrix (--imatrix)")]
    MissingImatrix {
        /// The tensor.
        tensor: String,
        /// The target type.
        ty: QuantType,
    },
    /// An importance matrix file is malformed.
    #[error("{}: bad importance matrix: {message}", file.display())]
    BadImatrix {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An importance matrix entry has the wrong length for its tensor (another model's file).
    #[error("{}: importance matrix entry {tensor} has {found} values, the tensor has {expected} columns (is it for another model?)", file.display())]
    ImatrixMismatch {
        /// The imatrix file.
        file: PathBuf,
        /// The tensor.
        tensor: String,
        /// The tensor's row length.
        expected: usize,
        /// Values in the entry.
        found: usize,
    },
    /// An importance matrix with no entry for any tensor being quantized.
    #[error("{}: the importance matrix has no entry for any tensor of this model (is it for another model?)", file.display())]
    ImatrixForAnotherModel {
        /// The imatrix file.
        file: PathBuf,
    },
    /// A tensor holds NaN or infinity.
    #[error("{}: tensor {tensor} holds a non-finite value at element {index}", file.display())]
    NonFinite {
        /// The input.
        file: PathBuf,
        /// The tensor.
        tensor: String,
        /// The first bad element.
        index: usize,
    },
    /// A `--tensor-type` override is malformed.
    #[error("bad tensor type override `{spec}`: {message}")]
    BadOverride {
        /// The override as given.
        spec: String,
        /// What is wrong.
        message: String,
    },
    /// The input has a shape or metadata the quantizer cannot use.
    #[error("{}: {message}", file.display())]
    BadInput {
        /// The input file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Calibration (importance matrix, GPTQ) could not run.
    #[error("calibration: {0}")]
    Calibration(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A quantizer was called with inconsistent lengths (a bug, reported rather than a panic).
    #[error("tensor {tensor}: {source}")]
    Quant {
        /// The tensor.
        tensor: String,
        /// The cause.
        source: shuku_quants::QuantError,
    },
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, QuantizeError>;
