//! The exporters' error type: every failure names the file, tensor or option at fault.

use std::path::PathBuf;

use shuku_model::ModelError;

/// What can go wrong while exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The model uses something this format's exporter does not write.
    #[error("{format} export: {model_type} models with {what} are not supported")]
    Unsupported {
        /// `onnx` or `mlx`.
        format: &'static str,
        /// The model's HF `model_type`.
        model_type: String,
        /// The unsupported feature.
        what: String,
    },
    /// A weight's input width is not a whole number of quantization groups.
    #[error("{tensor}: input width {width} is not a multiple of the group size {group_size} (pick a group size that divides every width, e.g. 32)")]
    GroupSize {
        /// The HF tensor name.
        tensor: String,
        /// Its input width.
        width: usize,
        /// The requested group size.
        group_size: usize,
    },
    /// An option value the format cannot write.
    #[error("{format} export: {option} = {value} is not supported ({allowed})")]
    Option {
        /// `onnx` or `mlx`.
        format: &'static str,
        /// The option's name.
        option: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        allowed: &'static str,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Encoding a file failed.
    #[error("{file}: {message}")]
    Encode {
        /// The file being written.
        file: String,
        /// What failed.
        message: String,
    },
    /// A runtime failed to load or run an export.
    #[error("{runtime}: {message}")]
    Runtime {
        /// `onnx`, `genai` or `mlx`.
        runtime: &'static str,
        /// What failed.
        message: String,
    },
    /// Loading the model, reading its tensors, or staging the output folder failed (an existing output
    /// folder without `overwrite` is [`ModelError::OutputExists`]).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

impl ExportError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// The exporters' result type.
pub type Result<T> = std::result::Result<T, ExportError>;
