//! `shuku export`: write a full-precision HF model folder for another runtime — an onnxruntime-genai
//! folder (ONNX Runtime) or an mlx-lm folder (MLX) — and print what was written.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use shuku_export::{exporter, ExportOptions, Format, WeightBits};
use shuku_model::Llama;

/// Export an HF model folder to ONNX Runtime (onnxruntime-genai) or MLX (mlx-lm).
///
/// --bits 4 or 8 quantizes every linear layer in groups of --group-size weights (ONNX: MatMulNBits,
/// default 32; MLX: affine, default 64); 16 and 32 write float weights. Pruned models with uneven layer
/// widths export as they are to ONNX and padded with exact zeros to MLX.
///
/// Example: shuku export --format onnx --bits 4 SmolLM2-135M-Instruct smollm2-onnx-int4
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Target runtime: onnx or mlx.
    #[arg(long, short = 'f')]
    format: Format,
    /// Weight bits: 4, 8 (quantized), 16 or 32 (float).
    #[arg(long, default_value_t = 4)]
    bits: u32,
    /// Weights per quantization group (default: the runtime's own converter's, 32 for ONNX, 64 for MLX).
    #[arg(long)]
    group_size: Option<usize>,
    /// MLX: float type of scales, biases and unquantized tensors: f16, bf16 or f32.
    #[arg(long, default_value = "f16")]
    dtype: shuku_export::MlxDtype,
    /// ONNX: no zero points (each group centred on the middle code), the model builder's layout.
    #[arg(long)]
    symmetric: bool,
    /// Replace OUT if it exists.
    #[arg(long)]
    overwrite: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    report_json: Option<PathBuf>,
    /// The HF model folder (config.json, safetensors, tokenizer files).
    model: PathBuf,
    /// The folder to write.
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let options = ExportOptions {
        bits: WeightBits::from_bits(args.bits, args.format)?,
        group_size: args.group_size,
        mlx_dtype: args.dtype,
        symmetric: args.symmetric,
        overwrite: args.overwrite,
        progress: true,
    };
    let model = Llama::from_hf_dir(&args.model, &Device::Cpu)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let report = exporter(args.format, options).export(&model, &args.model, &args.out)?;
    print!("{report}");
    if let Some(path) = &args.report_json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
