//! `shuku convert HF_DIR -o OUT.gguf --outtype f32|f16|bf16`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use shuku_model::export::{convert_hf_dir, ExportOptions, OutType, PlainEncoder};

use crate::progress::bar;
use crate::table::human_bytes;

/// Convert a Hugging Face model folder (config.json + safetensors, sharded or not, + tokenizer.json)
/// to a GGUF file that llama.cpp loads.
///
/// Supports llama-family models: llama, mistral, qwen2 (with its QKV biases), SmolLM. The GGUF is
/// written tensor by tensor from the memory-mapped safetensors, so memory stays at one tensor; it goes
/// to a temporary file that is renamed only when complete. Matrices take --outtype, 1-D tensors (norms,
/// biases) stay F32, as llama.cpp's converter does.
///
/// Example: shuku convert ./SmolLM2-135M -o smollm2-f16.gguf --outtype f16
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The HF model folder.
    model: PathBuf,
    /// Output GGUF file.
    #[arg(short, long)]
    output: PathBuf,
    /// Element type of the matrices.
    #[arg(long, value_enum, default_value = "f16")]
    outtype: OutTypeArg,
    /// `general.name` to record (default: the folder name).
    #[arg(long)]
    name: Option<String>,
    /// `tokenizer.ggml.pre` to record when the pre-tokenizer in tokenizer.json is not recognised
    /// (e.g. gpt-2, llama-bpe, qwen2, smollm).
    #[arg(long)]
    tokenizer_pre: Option<String>,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    overwrite: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OutTypeArg {
    F32,
    F16,
    Bf16,
}

pub fn run(args: Args) -> Result<()> {
    let outtype = match args.outtype {
        OutTypeArg::F32 => OutType::F32,
        OutTypeArg::F16 => OutType::F16,
        OutTypeArg::Bf16 => OutType::BF16,
    };
    let options = ExportOptions {
        name: args.name.clone(),
        overwrite: args.overwrite,
        tokenizer_pre: args.tokenizer_pre.clone(),
    };
    if args.output.exists() && !args.overwrite {
        bail!(
            "{} exists: pass --overwrite to replace it",
            args.output.display()
        );
    }
    let pb = bar(0, "converting");
    let report = convert_hf_dir(
        &args.model,
        &args.output,
        &PlainEncoder(outtype),
        &options,
        &mut |done, total, name| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
            pb.set_message(name.to_string());
        },
    )
    .with_context(|| format!("cannot convert {}", args.model.display()))?;
    pb.finish_and_clear();
    println!(
        "{}: {} tensors, {} parameters, {} of tensor data ({:.2} bits per weight), {:?}",
        report.path.display(),
        report.n_tensors,
        report.n_params,
        human_bytes(report.tensor_bytes),
        report.tensor_bytes as f64 * 8.0 / report.n_params.max(1) as f64,
        outtype,
    );
    Ok(())
}
