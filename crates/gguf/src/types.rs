//! ggml tensor types: numeric ids, block geometry and names.
//!
//! The table mirrors ggml's type traits (`ggml.c`) so byte sizes can be computed for every type a
//! GGUF file may hold, even the ones candle cannot decode: that is what lets the reader bounds-check
//! every tensor. Ids that are not in the table are kept as [`TensorType::Unknown`] so that a file
//! from a newer llama.cpp still opens.

use candle_core::quantized::GgmlDType;

macro_rules! ggml_types {
    ($($(#[$doc:meta])* $var:ident = $id:literal, $block:literal, $size:literal, $name:literal, $lower:literal;)*) => {
        /// Every ggml tensor type, with its numeric id as stored in GGUF.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        #[non_exhaustive]
        pub enum GgmlType {
            $($(#[$doc])* $var = $id,)*
        }

        impl GgmlType {
            /// All known types, in id order.
            pub const ALL: &'static [GgmlType] = &[$(GgmlType::$var,)*];

            /// The type with this GGUF id, if known.
            pub fn from_id(id: u32) -> Option<Self> {
                match id {
                    $($id => Some(GgmlType::$var),)*
                    _ => None,
                }
            }

            /// Elements per block (1 for plain types).
            pub fn block_size(self) -> u64 {
                match self { $(GgmlType::$var => $block,)* }
            }

            /// Bytes per block.
            pub fn type_size(self) -> u64 {
                match self { $(GgmlType::$var => $size,)* }
            }

            /// Upper-case name as llama.cpp's tools and gguf-py print it (`Q4_K`, `BF16`).
            pub fn name(self) -> &'static str {
                match self { $(GgmlType::$var => $name,)* }
            }

            /// ggml's internal `type_name` (`q4_K`, `bf16`).
            pub fn ggml_name(self) -> &'static str {
                match self { $(GgmlType::$var => $lower,)* }
            }
        }
    };
}

ggml_types! {
    /// 32-bit float.
    F32 = 0, 1, 4, "F32", "f32";
    /// IEEE half.
    F16 = 1, 1, 2, "F16", "f16";
    /// 4-bit, one f16 scale per 32.
    Q4_0 = 2, 32, 18, "Q4_0", "q4_0";
    /// 4-bit, f16 scale and min per 32.
    Q4_1 = 3, 32, 20, "Q4_1", "q4_1";
    /// 5-bit, scale per 32.
    Q5_0 = 6, 32, 22, "Q5_0", "q5_0";
    /// 5-bit, scale and min per 32.
    Q5_1 = 7, 32, 24, "Q5_1", "q5_1";
    /// 8-bit, scale per 32.
    Q8_0 = 8, 32, 34, "Q8_0", "q8_0";
    /// 8-bit with f16 scale and sum (activation type). 36 bytes per block as ggml's
    /// `block_q8_1` static_assert says; gguf-py's table (40) is stale.
    Q8_1 = 9, 32, 36, "Q8_1", "q8_1";
    /// 2-bit k-quant.
    Q2_K = 10, 256, 84, "Q2_K", "q2_K";
    /// 3-bit k-quant.
    Q3_K = 11, 256, 110, "Q3_K", "q3_K";
    /// 4-bit k-quant.
    Q4_K = 12, 256, 144, "Q4_K", "q4_K";
    /// 5-bit k-quant.
    Q5_K = 13, 256, 176, "Q5_K", "q5_K";
    /// 6-bit k-quant.
    Q6_K = 14, 256, 210, "Q6_K", "q6_K";
    /// 8-bit k-quant (activation type).
    Q8_K = 15, 256, 292, "Q8_K", "q8_K";
    /// i-quant 2.06 bpw.
    IQ2_XXS = 16, 256, 66, "IQ2_XXS", "iq2_xxs";
    /// i-quant 2.31 bpw.
    IQ2_XS = 17, 256, 74, "IQ2_XS", "iq2_xs";
    /// i-quant 3.06 bpw.
    IQ3_XXS = 18, 256, 98, "IQ3_XXS", "iq3_xxs";
    /// i-quant 1.56 bpw.
    IQ1_S = 19, 256, 50, "IQ1_S", "iq1_s";
    /// non-linear 4-bit, blocks of 32.
    IQ4_NL = 20, 32, 18, "IQ4_NL", "iq4_nl";
    /// i-quant 3.44 bpw.
    IQ3_S = 21, 256, 110, "IQ3_S", "iq3_s";
    /// i-quant 2.5 bpw.
    IQ2_S = 22, 256, 82, "IQ2_S", "iq2_s";
    /// non-linear 4-bit, super-blocks of 256.
    IQ4_XS = 23, 256, 136, "IQ4_XS", "iq4_xs";
    /// 8-bit integer.
    I8 = 24, 1, 1, "I8", "i8";
    /// 16-bit integer.
    I16 = 25, 1, 2, "I16", "i16";
    /// 32-bit integer.
    I32 = 26, 1, 4, "I32", "i32";
    /// 64-bit integer.
    I64 = 27, 1, 8, "I64", "i64";
    /// 64-bit float.
    F64 = 28, 1, 8, "F64", "f64";
    /// i-quant 1.75 bpw.
    IQ1_M = 29, 256, 56, "IQ1_M", "iq1_m";
    /// bfloat16.
    BF16 = 30, 1, 2, "BF16", "bf16";
    /// ternary, 1.69 bpw.
    TQ1_0 = 34, 256, 54, "TQ1_0", "tq1_0";
    /// ternary, 2.06 bpw.
    TQ2_0 = 35, 256, 66, "TQ2_0", "tq2_0";
    /// microscaling fp4.
    MXFP4 = 39, 32, 17, "MXFP4", "mxfp4";
    /// NVIDIA fp4.
    NVFP4 = 40, 64, 36, "NVFP4", "nvfp4";
    /// 1-bit.
    Q1_0 = 41, 128, 18, "Q1_0", "q1_0";
}

impl GgmlType {
    /// The numeric id stored in GGUF.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Whether the type is block-quantized (anything but plain float/int types).
    pub fn is_quantized(self) -> bool {
        !matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::F64
                | GgmlType::I8
                | GgmlType::I16
                | GgmlType::I32
                | GgmlType::I64
        )
    }

    /// Bits per weight: `8 * type_size / block_size`.
    pub fn bits_per_weight(self) -> f64 {
        8.0 * self.type_size() as f64 / self.block_size() as f64
    }

    /// Bytes for `n_elements` elements, `None` if not a whole number of blocks or on overflow.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        if !n_elements.is_multiple_of(self.block_size()) {
            return None;
        }
        (n_elements / self.block_size()).checked_mul(self.type_size())
    }

    /// candle's equivalent, when candle supports the type.
    pub fn to_candle(self) -> Option<GgmlDType> {
        Some(match self {
            GgmlType::F32 => GgmlDType::F32,
            GgmlType::F16 => GgmlDType::F16,
            GgmlType::BF16 => GgmlDType::BF16,
            GgmlType::Q4_0 => GgmlDType::Q4_0,
            GgmlType::Q4_1 => GgmlDType::Q4_1,
            GgmlType::Q5_0 => GgmlDType::Q5_0,
            GgmlType::Q5_1 => GgmlDType::Q5_1,
            GgmlType::Q8_0 => GgmlDType::Q8_0,
            GgmlType::Q8_1 => GgmlDType::Q8_1,
            GgmlType::Q2_K => GgmlDType::Q2K,
            GgmlType::Q3_K => GgmlDType::Q3K,
            GgmlType::Q4_K => GgmlDType::Q4K,
            GgmlType::Q5_K => GgmlDType::Q5K,
            GgmlType::Q6_K => GgmlDType::Q6K,
            GgmlType::Q8_K => GgmlDType::Q8K,
            _ => return None,
        })
    }

    /// The plain candle `DType` for unquantized float types (F32, F16, BF16, F64).
    pub fn to_candle_dtype(self) -> Option<candle_core::DType> {
        Some(match self {
            GgmlType::F32 => candle_core::DType::F32,
            GgmlType::F16 => candle_core::DType::F16,
            GgmlType::BF16 => candle_core::DType::BF16,
            GgmlType::F64 => candle_core::DType::F64,
            _ => return None,
        })
    }

    /// The type for a candle quantized dtype.
    pub fn from_candle(d: GgmlDType) -> Self {
        match d {
            GgmlDType::F32 => GgmlType::F32,
            GgmlDType::F16 => GgmlType::F16,
            GgmlDType::BF16 => GgmlType::BF16,
            GgmlDType::Q4_0 => GgmlType::Q4_0,
            GgmlDType::Q4_1 => GgmlType::Q4_1,
            GgmlDType::Q5_0 => GgmlType::Q5_0,
            GgmlDType::Q5_1 => GgmlType::Q5_1,
            GgmlDType::Q8_0 => GgmlType::Q8_0,
            GgmlDType::Q8_1 => GgmlType::Q8_1,
            GgmlDType::Q2K => GgmlType::Q2_K,
            GgmlDType::Q3K => GgmlType::Q3_K,
            GgmlDType::Q4K => GgmlType::Q4_K,
            GgmlDType::Q5K => GgmlType::Q5_K,
            GgmlDType::Q6K => GgmlType::Q6_K,
            GgmlDType::Q8K => GgmlType::Q8_K,
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A tensor's type as found in a file: known, or an id this crate does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorType {
    /// A type in [`GgmlType`].
    Known(GgmlType),
    /// An unknown id; the tensor's size cannot be computed, so it can only be skipped.
    Unknown(u32),
}

impl TensorType {
    /// Classifies a raw id.
    pub fn from_id(id: u32) -> Self {
        GgmlType::from_id(id).map_or(TensorType::Unknown(id), TensorType::Known)
    }

    /// The raw id.
    pub fn id(self) -> u32 {
        match self {
            TensorType::Known(t) => t.id(),
            TensorType::Unknown(id) => id,
        }
    }

    /// The known type, if any.
    pub fn known(self) -> Option<GgmlType> {
        match self {
            TensorType::Known(t) => Some(t),
            TensorType::Unknown(_) => None,
        }
    }
}

impl std::fmt::Display for TensorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TensorType::Known(t) => f.write_str(t.name()),
            TensorType::Unknown(id) => write!(f, "unknown({id})"),
        }
    }
}

impl From<GgmlType> for TensorType {
    fn from(t: GgmlType) -> Self {
        TensorType::Known(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sizes_match_ggml() {
        for &t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_id(99), None);
        assert_eq!(GgmlType::Q4_K.type_size(), 144);
        assert_eq!(GgmlType::Q6_K.type_size(), 210);
        assert_eq!(GgmlType::BF16.id(), 30);
        assert_eq!(GgmlType::MXFP4.id(), 39);
        assert_eq!(GgmlType::Q4_K.name(), "Q4_K");
        assert_eq!(GgmlType::Q4_K.ggml_name(), "q4_K");
        assert!((GgmlType::Q4_0.bits_per_weight() - 4.5).abs() < 1e-9);
        assert_eq!(TensorType::from_id(99), TensorType::Unknown(99));
    }

    #[test]
    fn candle_mapping_agrees_on_sizes() {
        for &t in GgmlType::ALL {
            if let Some(c) = t.to_candle() {
                assert_eq!(c.block_size() as u64, t.block_size(), "{t}");
                assert_eq!(c.type_size() as u64, t.type_size(), "{t}");
                assert_eq!(GgmlType::from_candle(c), t);
            }
        }
    }
}
