//! `shuku imatrix --model M --file calib.txt -o imatrix.gguf`: an importance matrix in
//! llama-imatrix's GGUF format.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use shuku_model::Llama;
use shuku_quantize::collect_imatrix;

use crate::calib::calibration_chunks;

use crate::progress::bar;

/// Compute an importance matrix (per-column mean squared activations of every linear layer's
/// input) over calibration text, in llama-imatrix's GGUF format: `llama-quantize --imatrix` and
/// `shuku quantize --imatrix` both read it.
///
/// MODEL is an HF folder or a full-precision GGUF file (run by shuku-model in f32). The text is cut
/// into consecutive chunks of -c tokens, each evaluated in a fresh context with its first token
/// replaced by BOS when the vocabulary adds one, as llama-imatrix does.
///
/// Example: shuku imatrix --model model-f32.gguf --file calib.txt -c 512 --chunks 64 -o imatrix.gguf
#[derive(Debug, clap::Args)]
pub struct Args {
    /// HF folder or GGUF file (F32/F16/BF16).
    #[arg(short, long)]
    model: PathBuf,
    /// Calibration text.
    #[arg(short, long)]
    file: PathBuf,
    /// Output file.
    #[arg(short, long, default_value = "imatrix.gguf")]
    output: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long, default_value_t = 512)]
    ctx: usize,
    /// At most this many chunks (default: the whole text).
    #[arg(long)]
    chunks: Option<usize>,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.output.exists() && !args.overwrite {
        anyhow::bail!(
            "{} exists: pass --overwrite to replace it",
            args.output.display()
        );
    }
    let (chunks, n_tokens) = calibration_chunks(&args.model, &args.file, args.ctx, args.chunks)?;
    let model = if args.model.is_file() {
        Llama::from_gguf(&args.model, &Device::Cpu)
    } else {
        Llama::from_hf_dir(&args.model, &Device::Cpu)
    }
    .with_context(|| format!("cannot load {}", args.model.display()))?;
    let pb = bar(chunks.len() as u64, "imatrix");
    let m = collect_imatrix(
        &model,
        &chunks,
        &args.file.display().to_string(),
        &mut |done, _| pb.set_position(done as u64),
    )?;
    pb.finish_and_clear();
    let path = m.save(&args.output, args.overwrite)?;
    println!(
        "{}: {} entries from {} chunks of {} tokens ({} tokens in the text)",
        path.display(),
        m.entries.len(),
        m.chunk_count,
        m.chunk_size,
        n_tokens
    );
    Ok(())
}
