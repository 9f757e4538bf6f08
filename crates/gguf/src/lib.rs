//! GGUF for shuku: a memory-mapped, validating reader and a streaming, atomic writer for the file
//! format llama.cpp loads, plus llama.cpp's conventions on top of it — metadata keys
//! ([`ArchParams`], [`GeneralMeta`]), HF ↔ GGUF tensor names ([`names`]), the rotary Q/K row
//! permutation ([`permute`]) and `tokenizer.json` → `tokenizer.ggml.*` export ([`tokenizer`]).
//!
//! ```no_run
//! use shuku_gguf::{GgufFile, GgufWriter, GgmlType, Metadata, Value};
//! use shuku_gguf::writer::TensorDesc;
//!
//! # fn main() -> shuku_gguf::Result<()> {
//! let f = GgufFile::open("model.gguf")?;
//! let arch = f.get_str("general.architecture")?;
//! for info in f.tensor_infos() {
//!     println!("{arch} {} {:?} {}", info.name, info.shape(), info.ttype);
//! }
//! let embd = f.tensor("token_embd.weight")?.to_tensor(&candle_core::Device::Cpu)?;
//!
//! let mut meta = Metadata::new();
//! meta.insert("general.architecture", "llama");
//! let mut w = GgufWriter::create(
//!     "out.gguf",
//!     &meta,
//!     vec![TensorDesc::new("x", vec![4], GgmlType::F32)],
//! )?;
//! w.write_tensor("x", &[0u8; 16])?;
//! w.finish()?; // fsync + atomic rename; dropping `w` instead leaves no file behind
//! # let _ = (embd, Value::U32(0));
//! # Ok(())
//! # }
//! ```
//!
//! # Why not candle's `gguf_file`
//!
//! candle 0.11's `quantized::gguf_file` is a good loader for inference but not for a converter
//! that must be robust and stream: it reads metadata into a `HashMap` (file order is lost), copies
//! each tensor into a fresh `Vec` instead of borrowing a memory map, fails the whole file on any
//! tensor type id it does not know, decodes invalid UTF-8 lossily, does not check tensor offsets,
//! zero or overflowing dimensions, overlaps or alignment (a `general.alignment` of 0 divides by
//! zero), and its writer takes every tensor in memory at once and writes GGUF v2 without an
//! explicit alignment. It also has no notion of llama.cpp's key conventions such as per-layer
//! `feed_forward_length` arrays used by pruned models. This crate still uses candle for what it is
//! good at: [`TensorView::to_qtensor`] / [`TensorView::to_tensor`] hand bytes to candle.

pub mod error;
pub mod llama_meta;
pub mod metadata;
pub mod names;
pub mod permute;
pub mod reader;
pub mod sentencepiece;
pub mod tokenizer;
pub mod types;
pub mod value;
pub mod writer;

pub use error::{Error, Result};
pub use llama_meta::{is_llama_arch, ArchParams, GeneralMeta, LlamaFileType, PerLayer};
pub use metadata::Metadata;
pub use reader::{parse, GgufFile, GgufHeader, TensorInfo, TensorView};
pub use types::{GgmlType, TensorType};
pub use value::{Array, Value, ValueType};
pub use writer::{GgufWriter, TensorDesc, WriterOptions};
