//! `shuku convert HF_DIR -o OUT.gguf --outtype f32|f16|bf16`, and `shuku convert IN.gguf -o HF_DIR`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use shuku_model::export::{convert_hf_dir, ExportOptions, OutType, PlainEncoder};

use crate::progress::bar;
use crate::table::human_bytes;

/// Convert a Hugging Face model folder (config.json + safetensors, sharded or not, + tokenizer.json or
/// tokenizer.model) to a GGUF file that llama.cpp loads, or a GGUF file back to such a folder.
///
/// Families: llama (incl. Llama 3 RoPE scaling, SmolLM), mistral, qwen2, qwen3, phi3, gemma3. The GGUF
/// equals what llama.cpp's convert_hf_to_gguf.py writes for the same folder; it is written tensor by
/// tensor from the memory-mapped safetensors, so memory stays at one tensor, to a temporary file that
/// is renamed only when complete. Matrices take --outtype, 1-D tensors (norms, biases) stay F32.
///
/// Given a .gguf file, writes an f32 HF folder (any tensor type is dequantized) with the file's
/// vocabulary as tokenizer.gguf, which every shuku command reads and a later convert writes back: a
/// model held only as GGUF can be pruned, distilled and quantized.
///
/// Examples: shuku convert ./SmolLM2-135M -o smollm2-f16.gguf --outtype f16
///           shuku convert gemma-3-270m-q4_k_m.gguf -o ./gemma-3-270m
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The HF model folder, or a GGUF file to turn into one.
    model: PathBuf,
    /// Output GGUF file (or HF folder, for a GGUF input).
    #[arg(short, long)]
    output: PathBuf,
    /// Element type of the matrices.
    #[arg(long, value_enum, default_value = "f16")]
    outtype: OutTypeArg,
    /// `general.name` to record (default: the folder name).
    #[arg(long)]
    name: Option<String>,
    /// `tokenizer.ggml.pre` to record when the BPE pre-tokenizer of tokenizer.json is not one llama.cpp
    /// knows by its hash (e.g. gpt-2, llama-bpe, qwen2, smollm).
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
    if args.model.is_file() {
        return gguf_to_folder(&args);
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

/// A GGUF file to an f32 HF folder with its vocabulary.
fn gguf_to_folder(args: &Args) -> Result<()> {
    let model = shuku_model::gguf_to_hf_dir(&args.model, &args.output, args.overwrite)
        .with_context(|| format!("cannot convert {}", args.model.display()))?;
    let config = model.config();
    println!(
        "{}: {} ({} layers, {} parameters), f32 safetensors, vocabulary in {}",
        args.output.display(),
        config.model_type.as_str(),
        config.num_hidden_layers(),
        config.n_params(),
        shuku_model::VOCAB_GGUF,
    );
    Ok(())
}
