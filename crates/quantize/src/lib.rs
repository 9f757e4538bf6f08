//! Whole-model quantization for shuku: what `llama-quantize` does, with the same bytes.
//!
//! [`Quantizer`] reads an F32/F16/BF16 GGUF file or an HF folder, chooses every tensor's type by
//! llama-quantize's presets and per-tensor rules ([`rules`]), rounds each tensor with
//! shuku-quants' llama.cpp-exact quantizers (weighted by an importance matrix when one is given,
//! [`imatrix`]) and streams the result into a GGUF file, one tensor in memory at a time. A
//! [`Report`] tells what each tensor became.

#![deny(missing_docs)]

pub mod bpw;
pub mod calibrate;
pub mod error;
pub mod gptq;
pub mod imatrix;
mod quantizer;
pub mod report;
pub mod rules;

pub use calibrate::{chunks, collect_imatrix, ChunkOptions};
pub use error::{QuantizeError, Result};
pub use gptq::{gptq, GptqOptions, GptqTarget};
pub use imatrix::{Imatrix, ImatrixEntry};
pub use quantizer::{preset, presets, Quantizer};
pub use report::{Report, TensorReport};
