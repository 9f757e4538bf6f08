//! [`QuantType`], the formats this crate writes and reads, and [`BlockFormat`], the trait every
//! block struct implements; the byte-level entry points dispatch from one to the other.

use bytemuck::Pod;
use half::{bf16, f16};

use crate::blocks::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8_0,
};

/// A block format: its quantizers and its dequantizer.
///
/// `quantize_ref` is llama.cpp's `quantize_row_*_ref`; `quantize_weighted` is the row quantizer
/// `quantize_*` runs when it is given an importance matrix (`quant_weights`, one weight per
/// column). Both take a whole number of blocks.
pub trait BlockFormat: Pod {
    /// Elements per block.
    const BLOCK_ELEMS: usize;
    /// The format's [`QuantType`].
    const TYPE: QuantType;

    /// llama.cpp's reference quantizer: `x.len() == out.len() * BLOCK_ELEMS`.
    fn quantize_ref(x: &[f32], out: &mut [Self]);

    /// The importance-weighted quantizer of one row: `quant_weights` has one weight per element
    /// of `x`.
    fn quantize_weighted(x: &[f32], out: &mut [Self], quant_weights: &[f32]);

    /// Decodes the blocks into `out` (`out.len() == blocks.len() * BLOCK_ELEMS`).
    fn dequantize(blocks: &[Self], out: &mut [f32]);
}

/// Why a quantization or dequantization call cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The row length is not a whole number of the type's blocks.
    #[error("row length {n_per_row} is not a multiple of the {ty} block size {block}")]
    RowLength {
        /// The type.
        ty: QuantType,
        /// The row length asked for.
        n_per_row: usize,
        /// The type's block size.
        block: usize,
    },
    /// A buffer's length does not match the shape.
    #[error("{what}: expected {expected} {unit}, got {got}")]
    Length {
        /// Which buffer.
        what: &'static str,
        /// Its expected length.
        expected: usize,
        /// Its actual length.
        got: usize,
        /// Elements or bytes.
        unit: &'static str,
    },
}

macro_rules! quant_types {
    ($($(#[$doc:meta])* $var:ident = $id:literal, $block:expr, $size:expr, $name:literal;)*) => {
        /// A tensor type shuku-quants writes and reads: the ggml id, block geometry and name of each.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        pub enum QuantType {
            $($(#[$doc])* $var,)*
        }

        impl QuantType {
            /// Every type, in ggml id order.
            pub const ALL: &'static [QuantType] = &[$(QuantType::$var,)*];

            /// ggml's numeric id (as stored in GGUF).
            pub fn ggml_id(self) -> u32 {
                match self { $(QuantType::$var => $id,)* }
            }

            /// The type with ggml id `id`, if this crate handles it.
            pub fn from_ggml_id(id: u32) -> Option<Self> {
                match id { $($id => Some(QuantType::$var),)* _ => None }
            }

            /// Elements per block.
            pub fn block_size(self) -> usize {
                match self { $(QuantType::$var => $block,)* }
            }

            /// Bytes per block.
            pub fn type_size(self) -> usize {
                match self { $(QuantType::$var => $size,)* }
            }

            /// The upper-case name llama.cpp's tools print (`Q4_K`).
            pub fn name(self) -> &'static str {
                match self { $(QuantType::$var => $name,)* }
            }
        }
    };
}

quant_types! {
    /// 32-bit float.
    F32 = 0, 1, 4, "F32";
    /// IEEE half.
    F16 = 1, 1, 2, "F16";
    /// 4-bit legacy, scale only.
    Q4_0 = 2, 32, std::mem::size_of::<BlockQ4_0>(), "Q4_0";
    /// 4-bit legacy, scale and minimum.
    Q4_1 = 3, 32, std::mem::size_of::<BlockQ4_1>(), "Q4_1";
    /// 5-bit legacy, scale only.
    Q5_0 = 6, 32, std::mem::size_of::<BlockQ5_0>(), "Q5_0";
    /// 5-bit legacy, scale and minimum.
    Q5_1 = 7, 32, std::mem::size_of::<BlockQ5_1>(), "Q5_1";
    /// 8-bit legacy.
    Q8_0 = 8, 32, std::mem::size_of::<BlockQ8_0>(), "Q8_0";
    /// 2-bit k-quant.
    Q2_K = 10, 256, std::mem::size_of::<BlockQ2K>(), "Q2_K";
    /// 3-bit k-quant.
    Q3_K = 11, 256, std::mem::size_of::<BlockQ3K>(), "Q3_K";
    /// 4-bit k-quant.
    Q4_K = 12, 256, std::mem::size_of::<BlockQ4K>(), "Q4_K";
    /// 5-bit k-quant.
    Q5_K = 13, 256, std::mem::size_of::<BlockQ5K>(), "Q5_K";
    /// 6-bit k-quant.
    Q6_K = 14, 256, std::mem::size_of::<BlockQ6K>(), "Q6_K";
    /// bfloat16.
    BF16 = 30, 1, 2, "BF16";
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for QuantType {
    type Err = String;

    /// Parses a type name, in either case (`q4_k`, `Q4_K`, `bf16`).
    fn from_str(s: &str) -> Result<Self, String> {
        QuantType::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown tensor type `{s}`"))
    }
}

impl QuantType {
    /// Whether this is a block-quantized type (not F32/F16/BF16).
    pub fn is_quantized(self) -> bool {
        !matches!(self, QuantType::F32 | QuantType::F16 | QuantType::BF16)
    }

    /// Bits per weight of the encoding.
    pub fn bits_per_weight(self) -> f64 {
        self.type_size() as f64 * 8.0 / self.block_size() as f64
    }

    /// Bytes of one row of `n_per_row` elements, or `None` when the row is not a whole number of
    /// blocks.
    pub fn row_bytes(self, n_per_row: usize) -> Option<usize> {
        n_per_row
            .is_multiple_of(self.block_size())
            .then(|| n_per_row / self.block_size() * self.type_size())
    }

    /// Whether llama.cpp's quantizer for this type reads an importance matrix when it has one
    /// (Q8_0 and the float types ignore it).
    pub fn uses_importance(self) -> bool {
        self.is_quantized() && self != QuantType::Q8_0
    }

    fn check_rows(self, src: &[f32], n_per_row: usize) -> Result<usize, QuantError> {
        let bytes = self.row_bytes(n_per_row).filter(|_| n_per_row > 0);
        let Some(bytes) = bytes else {
            return Err(QuantError::RowLength {
                ty: self,
                n_per_row,
                block: self.block_size(),
            });
        };
        if !src.len().is_multiple_of(n_per_row) {
            return Err(QuantError::Length {
                what: "source values",
                expected: src.len().div_ceil(n_per_row) * n_per_row,
                got: src.len(),
                unit: "elements",
            });
        }
        Ok(src.len() / n_per_row * bytes)
    }

    /// Quantizes rows of `n_per_row` values (`src.len()` a multiple of it) as llama.cpp's
    /// `ggml_quantize_chunk` does: with `quant_weights` (one importance weight per column), the
    /// weighted quantizer; without, the reference one.
    pub fn quantize(
        self,
        src: &[f32],
        n_per_row: usize,
        quant_weights: Option<&[f32]>,
    ) -> Result<Vec<u8>, QuantError> {
        let len = self.check_rows(src, n_per_row)?;
        let mut out = vec![0u8; len];
        self.quantize_into(src, n_per_row, quant_weights, &mut out)?;
        Ok(out)
    }

    /// [`QuantType::quantize`] into a caller's buffer of exactly the right length.
    pub fn quantize_into(
        self,
        src: &[f32],
        n_per_row: usize,
        quant_weights: Option<&[f32]>,
        dst: &mut [u8],
    ) -> Result<(), QuantError> {
        let len = self.check_rows(src, n_per_row)?;
        if dst.len() != len {
            return Err(QuantError::Length {
                what: "destination",
                expected: len,
                got: dst.len(),
                unit: "bytes",
            });
        }
        if let Some(w) = quant_weights {
            if w.len() != n_per_row {
                return Err(QuantError::Length {
                    what: "importance weights",
                    expected: n_per_row,
                    got: w.len(),
                    unit: "elements",
                });
            }
        }
        fn run<B: BlockFormat>(src: &[f32], n: usize, qw: Option<&[f32]>, dst: &mut [u8]) {
            let blocks: &mut [B] = bytemuck::cast_slice_mut(dst);
            match qw {
                None => B::quantize_ref(src, blocks),
                Some(qw) => {
                    let per_row = n / B::BLOCK_ELEMS;
                    for (x, y) in src.chunks_exact(n).zip(blocks.chunks_exact_mut(per_row)) {
                        B::quantize_weighted(x, y, qw);
                    }
                }
            }
        }
        let qw = quant_weights.filter(|_| self.uses_importance());
        match self {
            QuantType::F32 => {
                for (d, x) in dst.chunks_exact_mut(4).zip(src) {
                    d.copy_from_slice(&x.to_le_bytes());
                }
            }
            QuantType::F16 => {
                for (d, x) in dst.chunks_exact_mut(2).zip(src) {
                    d.copy_from_slice(&f16::from_f32(*x).to_le_bytes());
                }
            }
            QuantType::BF16 => {
                for (d, x) in dst.chunks_exact_mut(2).zip(src) {
                    d.copy_from_slice(&bf16_from_f32(*x).to_le_bytes());
                }
            }
            QuantType::Q4_0 => run::<BlockQ4_0>(src, n_per_row, qw, dst),
            QuantType::Q4_1 => run::<BlockQ4_1>(src, n_per_row, qw, dst),
            QuantType::Q5_0 => run::<BlockQ5_0>(src, n_per_row, qw, dst),
            QuantType::Q5_1 => run::<BlockQ5_1>(src, n_per_row, qw, dst),
            QuantType::Q8_0 => run::<BlockQ8_0>(src, n_per_row, qw, dst),
            QuantType::Q2_K => run::<BlockQ2K>(src, n_per_row, qw, dst),
            QuantType::Q3_K => run::<BlockQ3K>(src, n_per_row, qw, dst),
            QuantType::Q4_K => run::<BlockQ4K>(src, n_per_row, qw, dst),
            QuantType::Q5_K => run::<BlockQ5K>(src, n_per_row, qw, dst),
            QuantType::Q6_K => run::<BlockQ6K>(src, n_per_row, qw, dst),
        }
        Ok(())
    }

    /// Decodes `bytes` (a whole number of blocks) into `out`, one value per element.
    pub fn dequantize(self, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
        let expected = out.len() / self.block_size() * self.type_size();
        if !out.len().is_multiple_of(self.block_size()) || bytes.len() != expected {
            return Err(QuantError::Length {
                what: "quantized bytes",
                expected,
                got: bytes.len(),
                unit: "bytes",
            });
        }
        fn run<B: BlockFormat>(bytes: &[u8], out: &mut [f32]) {
            // Copy into aligned blocks: GGUF data is only 32-byte aligned per tensor, and callers
            // may hand any sub-slice.
            let blocks: Vec<B> = bytes
                .chunks_exact(std::mem::size_of::<B>())
                .map(bytemuck::pod_read_unaligned)
                .collect();
            B::dequantize(&blocks, out);
        }
        match self {
            QuantType::F32 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            QuantType::F16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            QuantType::BF16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            QuantType::Q4_0 => run::<BlockQ4_0>(bytes, out),
            QuantType::Q4_1 => run::<BlockQ4_1>(bytes, out),
            QuantType::Q5_0 => run::<BlockQ5_0>(bytes, out),
            QuantType::Q5_1 => run::<BlockQ5_1>(bytes, out),
            QuantType::Q8_0 => run::<BlockQ8_0>(bytes, out),
            QuantType::Q2_K => run::<BlockQ2K>(bytes, out),
            QuantType::Q3_K => run::<BlockQ3K>(bytes, out),
            QuantType::Q4_K => run::<BlockQ4K>(bytes, out),
            QuantType::Q5_K => run::<BlockQ5K>(bytes, out),
            QuantType::Q6_K => run::<BlockQ6K>(bytes, out),
        }
        Ok(())
    }
}

/// ggml's `ggml_compute_fp32_to_bf16`: round to nearest even, NaN kept quiet.
fn bf16_from_f32(x: f32) -> bf16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return bf16::from_bits(((u >> 16) | 64) as u16);
    }
    bf16::from_bits(((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16)
}
