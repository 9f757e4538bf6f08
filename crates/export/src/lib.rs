//! Export a full-precision shuku model to the other edge runtimes, from the same Rust toolchain that prunes,
//! distils and quantizes it:
//!
//! - [`OnnxExporter`]: the folder onnxruntime-genai loads — `model.onnx` with its weights in
//!   `model.onnx.data`, `genai_config.json` and the tokenizer files — with the graph Microsoft's model
//!   builder makes for llama-family models (`GroupQueryAttention` with rotary inside,
//!   `SkipSimplifiedLayerNormalization`, `MatMulNBits` for 4- and 8-bit weights, past/present KV).
//! - [`MlxExporter`]: the folder mlx-lm loads — `config.json` with `quantization`, safetensors with MLX's
//!   packed affine weights, the tokenizer files.
//!
//! Both take the model in full precision (never a dequantized GGUF), quantize each group with a searched
//! range ([`groupwise`]), handle pruned models with uneven layer widths, and write through a temporary
//! folder that is renamed into place, so a failed export leaves nothing behind and an existing folder is
//! replaced only with `overwrite`.
//!
//! ```no_run
//! use shuku_export::{ExportOptions, Exporter, MlxExporter};
//! use shuku_model::Llama;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::path::Path::new("SmolLM2-135M-Instruct");
//! let model = Llama::from_hf_dir(dir, &candle_core::Device::Cpu)?;
//! let report = MlxExporter::new(ExportOptions::default()).export(&model, dir, "smollm2-mlx".as_ref())?;
//! println!("{report}");
//! # Ok(()) }
//! ```

mod error;
pub mod groupwise;
mod host;
mod mlx;
pub mod onnx;
mod options;
mod progress;
mod report;
pub mod runtime;
pub mod uniform;

use std::path::Path;

pub use error::{ExportError, Result};
pub use host::{host_tensors, HostTensor};
pub use mlx::MlxExporter;
pub use onnx::OnnxExporter;
pub use options::{ExportOptions, Format, MlxDtype, WeightBits};
pub use report::ExportReport;
use shuku_model::Llama;

/// One runtime's exporter.
pub trait Exporter {
    /// The format it writes.
    fn format(&self) -> Format;

    /// Writes `model` with the tokenizer files of the folder `tokenizer` to the folder `out`.
    fn export(&self, model: &Llama, tokenizer: &Path, out: &Path) -> Result<ExportReport>;
}

/// The exporter for `format` with `options`.
pub fn exporter(format: Format, options: ExportOptions) -> Box<dyn Exporter> {
    match format {
        Format::Onnx => Box::new(OnnxExporter::new(options)),
        Format::Mlx => Box::new(MlxExporter::new(options)),
    }
}
