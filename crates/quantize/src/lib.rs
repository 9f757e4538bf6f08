//! Whole-model quantization for shuku: what `llama-quantize` does, with the same bytes.
//!
//! [`Quantizer`] reads an F32/F16/BF16 GGUF file or an HF folder, chooses every tensor's type by
//! llama-quantize's presets and per-tensor rules ([`rules`]), rounds each tensor with
//! shuku-quants' llama.cpp-exact quantizers (weighted by an importance matrix when one is given,
//! [`imatrix`]) and streams the result into a GGUF file, one tensor in memory at a time. A
//! [`Report`] tells what each tensor became.
//!
//! Presets are looked up by llama-quantize's names, in any case:
//!
//! ```
//! use shuku_quantize::{preset, presets};
//!
//! let q4 = preset("q4_k_m")?;
//! assert_eq!(q4.name(), "Q4_K_M");
//! assert!(presets().iter().any(|f| f.name() == "Q8_0"));
//! assert!(preset("Q3_X").is_err()); // the error lists the known names
//! # Ok::<(), shuku_quantize::QuantizeError>(())
//! ```
//!
//! A whole run, like `llama-quantize --imatrix imatrix.gguf --tensor-type attn_v=q6_k
//! model-f16.gguf model-Q4_K_M.gguf Q4_K_M`:
//!
//! ```no_run
//! use shuku_quantize::{preset, Quantizer};
//!
//! let quantizer = Quantizer::new(preset("Q4_K_M")?)
//!     .imatrix_file("imatrix.gguf")?
//!     .tensor_type_spec("attn_v=q6_k")?
//!     .measure_error(true);
//! // What each tensor would become, without writing anything.
//! for (name, ty) in quantizer.plan("model-f16.gguf")? {
//!     println!("{name}: {ty}");
//! }
//! // The input may also be an HF folder; the output appears atomically when the run succeeds.
//! let report = quantizer.run("model-f16.gguf", "model-Q4_K_M.gguf")?;
//! println!("{}", report.table());
//! println!("{}", report.summary());
//! # Ok::<(), shuku_quantize::QuantizeError>(())
//! ```

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
