//! What the user chooses: the format, the weight precision and the quantization group size.

use std::fmt;
use std::str::FromStr;

use crate::error::{ExportError, Result};

/// The runtime an export is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// ONNX Runtime through onnxruntime-genai: `model.onnx` + external data + `genai_config.json`.
    Onnx,
    /// MLX through mlx-lm: `config.json` + safetensors with packed affine weights.
    Mlx,
}

impl Format {
    /// The name users type (`onnx`, `mlx`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Onnx => "onnx",
            Format::Mlx => "mlx",
        }
    }

    /// The group size used when none is given: the size each runtime's own converter uses by default
    /// (onnxruntime-genai's builder: 32; `mlx_lm.convert`: 64).
    pub fn default_group_size(self) -> usize {
        match self {
            Format::Onnx => 32,
            Format::Mlx => 64,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "onnx" => Ok(Format::Onnx),
            "mlx" => Ok(Format::Mlx),
            other => Err(format!("unknown export format {other:?} (onnx or mlx)")),
        }
    }
}

/// The precision of the exported linear weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightBits {
    /// 4-bit groups with a scale and an offset each.
    Q4,
    /// 8-bit groups with a scale and an offset each.
    Q8,
    /// Every weight in f16.
    F16,
    /// Every weight in f32.
    F32,
}

impl WeightBits {
    /// From the CLI's `--bits` (4, 8, 16 or 32).
    pub fn from_bits(bits: u32, format: Format) -> Result<Self> {
        match bits {
            4 => Ok(Self::Q4),
            8 => Ok(Self::Q8),
            16 => Ok(Self::F16),
            32 => Ok(Self::F32),
            other => Err(ExportError::Option {
                format: format.as_str(),
                option: "bits",
                value: other.to_string(),
                allowed: "4, 8, 16 or 32",
            }),
        }
    }

    /// The integer width of quantized weights; `None` for float exports.
    pub fn quantized(self) -> Option<u32> {
        match self {
            Self::Q4 => Some(4),
            Self::Q8 => Some(8),
            Self::F16 | Self::F32 => None,
        }
    }

    /// The bit count as the user wrote it.
    pub fn bits(self) -> u32 {
        match self {
            Self::Q4 => 4,
            Self::Q8 => 8,
            Self::F16 => 16,
            Self::F32 => 32,
        }
    }
}

/// The float type MLX exports store scales, biases and unquantized tensors in (`mlx_lm.convert --dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlxDtype {
    /// f16: what Apple GPUs compute in natively; half the bytes of f32 scales.
    F16,
    /// bf16.
    Bf16,
    /// f32: on x86 CPUs, MLX computes f16 about 30 times slower than f32.
    F32,
}

impl FromStr for MlxDtype {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f16" | "float16" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "f32" | "float32" => Ok(Self::F32),
            other => Err(format!("unknown MLX dtype {other:?} (f16, bf16 or f32)")),
        }
    }
}

/// How to export. `Default` is 4-bit weights in groups of the format's default size, refusing to replace an
/// existing folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Weight precision.
    pub bits: WeightBits,
    /// Weights per quantization group; `None` takes [`Format::default_group_size`].
    pub group_size: Option<usize>,
    /// MLX: the float type of scales, biases and unquantized tensors (ignored by 32-bit exports, which are
    /// f32 throughout, and by ONNX, whose `MatMulNBits` scales take the f32 activation type).
    pub mlx_dtype: MlxDtype,
    /// ONNX: quantize with the zero point fixed at the middle code and write no zero points (the model
    /// builder's layout, 1/8 bit per weight smaller at 4 bits in groups of 32); otherwise each group gets
    /// its own zero point (lower error).
    pub symmetric: bool,
    /// Replace an existing non-empty output folder.
    pub overwrite: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            bits: WeightBits::Q4,
            group_size: None,
            mlx_dtype: MlxDtype::F16,
            symmetric: false,
            overwrite: false,
            progress: false,
        }
    }
}

impl ExportOptions {
    /// The group size for `format`, checked against what its runtime accepts.
    pub(crate) fn group_size_for(&self, format: Format) -> Result<usize> {
        let group = self.group_size.unwrap_or(format.default_group_size());
        let (ok, allowed) = match format {
            // MatMulNBits takes any power of two from 16 up; the CPU kernels are tuned for 32 to 256.
            Format::Onnx => (
                group.is_power_of_two() && (16..=256).contains(&group),
                "16, 32, 64, 128 or 256",
            ),
            // mlx's quantized matmul supports these three.
            Format::Mlx => (matches!(group, 32 | 64 | 128), "32, 64 or 128"),
        };
        if ok {
            Ok(group)
        } else {
            Err(ExportError::Option {
                format: format.as_str(),
                option: "group size",
                value: group.to_string(),
                allowed,
            })
        }
    }
}
