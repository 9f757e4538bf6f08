//! ggml's quantization formats for shuku: the block layouts as plain-old-data structs
//! ([`blocks`]), dequantization, and llama.cpp's quantizers, both the reference ones
//! (`quantize_row_*_ref`, what `llama-quantize` runs without an importance matrix) and the
//! importance-weighted ones (`quantize_*` with `quant_weights`), written to give the same bytes.
//!
//! ```
//! use shuku_quants::QuantType;
//!
//! let row: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin()).collect();
//! let bytes = QuantType::Q4_K.quantize(&row, 256, None).unwrap();
//! assert_eq!(bytes.len(), QuantType::Q4_K.row_bytes(256).unwrap());
//! let mut back = vec![0.0; 256];
//! QuantType::Q4_K.dequantize(&bytes, &mut back).unwrap();
//! let err = row.iter().zip(&back).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
//! assert!(err < 0.1);
//! ```
//!
//! # Why not candle's quantizers
//!
//! candle's `k_quants` has the same block layouts, but its weight quantizers do not give
//! llama.cpp's bytes: its `nearest_int` rounds half away from zero where ggml rounds half to even
//! (the `+ 12582912.f` trick), its Q4_K/Q5_K search is the older `make_qkx1_quants`, and its
//! `from_float_imatrix` panics for most types. Users compare our files with `llama-quantize`'s
//! byte for byte, so the quantizers are written here, each beside the test that checks it against
//! llama.cpp's own `ggml_quantize_chunk` (`tests/peer`).
//!
//! This crate depends on no other shuku crate: it sits at the bottom of the graph, under both the
//! quantizer (`shuku-quantize`) and the inference engine (`shuku-infer`).

pub mod blocks;
mod format;
mod grid;
mod kquants;
mod legacy;
mod round;
mod search;

pub use format::{BlockFormat, QuantError, QuantType};
pub use grid::Grid;
