//! `shuku quantize IN OUT TYPE`: llama-quantize's presets and rules, with the same bytes.

use std::path::PathBuf;

use anyhow::{Context, Result};
use shuku_quantize::{preset, GptqOptions, Quantizer};

use crate::calib::calibration_chunks;

use crate::progress::bar;

/// Quantize a GGUF file (F32/F16/BF16) or an HF model folder into a quantized GGUF file.
///
/// TYPE is one of llama-quantize's presets: Q8_0, Q6_K, Q5_K_M, Q5_K_S, Q4_K_M, Q4_K_S, Q3_K_L,
/// Q3_K_M, Q3_K_S, Q2_K, Q2_K_S, Q4_0, Q4_1, Q5_0, Q5_1 (or F16, BF16, F32). Each tensor's type
/// follows llama-quantize's rules (output and embeddings, attn_v / ffn_down promotions, fallbacks
/// for row lengths that are not a multiple of the block size), and every block is byte-identical
/// to llama-quantize's for the same input and importance matrix.
///
/// Example: shuku quantize model-f32.gguf model-q4_k_m.gguf Q4_K_M --imatrix imatrix.gguf
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input: a GGUF file or an HF model folder.
    input: PathBuf,
    /// Output GGUF file.
    output: PathBuf,
    /// The preset (Q4_K_M, Q8_0, ...).
    #[arg(name = "TYPE")]
    preset: String,
    /// Importance matrix (llama-imatrix's GGUF or legacy .dat, or `shuku imatrix`'s output).
    #[arg(long)]
    imatrix: Option<PathBuf>,
    /// Every quantizable tensor gets the preset's type (no per-tensor rules).
    #[arg(long)]
    pure: bool,
    /// Keep output.weight as it is.
    #[arg(long)]
    leave_output_tensor: bool,
    /// Type of output.weight.
    #[arg(long)]
    output_tensor_type: Option<String>,
    /// Type of token_embd.weight.
    #[arg(long)]
    token_embedding_type: Option<String>,
    /// Per-tensor override REGEX=TYPE (repeatable; the first match wins), e.g. 'attn_v=q8_0'.
    #[arg(long = "tensor-type")]
    tensor_type: Vec<String>,
    /// Allow converting tensors that are already quantized.
    #[arg(long)]
    allow_requantize: bool,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    overwrite: bool,
    /// Print every tensor's type, bits per weight and RMSE.
    #[arg(long)]
    report: bool,
    /// Write the report as JSON to this file.
    #[arg(long)]
    report_json: Option<PathBuf>,
    /// Rounding: `rtn` (round to nearest, llama-quantize's) or `gptq` (Hessian-aware, over --calib).
    #[arg(long, value_enum, default_value = "rtn")]
    method: Method,
    /// Choose each weight's type by measured sensitivity so the file has at most this many bits
    /// per weight (needs --calib; TYPE still sets general.file_type and the untouched tensors).
    #[arg(long)]
    target_bpw: Option<f64>,
    /// Calibration text for --method gptq and --target-bpw.
    #[arg(long)]
    calib: Option<PathBuf>,
    /// Tokens per calibration chunk.
    #[arg(short = 'c', long, default_value_t = 512)]
    ctx: usize,
    /// At most this many calibration chunks.
    #[arg(long, default_value_t = 64)]
    chunks: usize,
    /// Worker threads (default: all cores).
    #[arg(short, long)]
    threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Method {
    Rtn,
    Gptq,
}

fn parse_type(s: &str) -> Result<shuku_quants::QuantType> {
    s.parse().map_err(anyhow::Error::msg)
}

pub fn run(args: Args) -> Result<()> {
    let ftype = preset(&args.preset)?;
    let mut q = Quantizer::new(ftype)
        .pure(args.pure)
        .leave_output_tensor(args.leave_output_tensor)
        .allow_requantize(args.allow_requantize)
        .overwrite(args.overwrite)
        .measure_error(args.report || args.report_json.is_some());
    if let Some(p) = &args.imatrix {
        q = q
            .imatrix_file(p)
            .with_context(|| format!("cannot use the importance matrix {}", p.display()))?;
    }
    if let Some(t) = &args.output_tensor_type {
        q = q.output_tensor_type(parse_type(t)?);
    }
    if let Some(t) = &args.token_embedding_type {
        q = q.token_embedding_type(parse_type(t)?);
    }
    for spec in &args.tensor_type {
        q = q.tensor_type_spec(spec)?;
    }
    if args.method == Method::Gptq || args.target_bpw.is_some() {
        let calib = args
            .calib
            .as_deref()
            .context("--method gptq and --target-bpw need calibration text: --calib FILE")?;
        let (chunks, _) = calibration_chunks(&args.input, calib, args.ctx, Some(args.chunks))?;
        if let Some(bpw) = args.target_bpw {
            anyhow::ensure!(
                bpw.is_finite() && bpw > 0.0,
                "--target-bpw must be a positive number of bits per weight"
            );
            q = q.target_bpw(bpw, chunks.clone());
        }
        if args.method == Method::Gptq {
            q = q.gptq(GptqOptions::new(chunks));
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()?;
    let pb = bar(0, "quantizing");
    let report = pool
        .install(|| {
            q.run_with_progress(&args.input, &args.output, &mut |done, total, name| {
                pb.set_length(total as u64);
                pb.set_position(done as u64);
                pb.set_message(name.to_string());
            })
        })
        .with_context(|| format!("cannot quantize {}", args.input.display()))?;
    pb.finish_and_clear();
    if args.report {
        print!("{}", report.table());
    }
    if let Some(path) = &args.report_json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("{report}");
    Ok(())
}
