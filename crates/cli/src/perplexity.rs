//! `shuku perplexity --model HF_DIR --file TEXT -c 256 --chunks N`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use shuku_eval::{perplexity, PerplexityProtocol};
use shuku_model::{Llama, Tokenizer};

use crate::progress::bar;

/// Perplexity of a model on a text file, with llama-perplexity's protocol.
///
/// The whole file is tokenized once and cut into consecutive chunks of -c tokens; each chunk is evaluated
/// in a fresh context (its first token replaced by BOS when the tokenizer adds BOS) and only the second
/// half of each chunk is scored, so every scored token sees at least c/2 tokens of context. The result is
/// directly comparable with `llama-perplexity -c N --chunks M` on the same text.
///
/// Example: shuku perplexity --model ./SmolLM2-135M --file kjv.txt -c 256 --chunks 16
#[derive(Debug, clap::Args)]
pub struct Args {
    /// HF model folder (config.json, safetensors, tokenizer.json).
    #[arg(short, long)]
    model: PathBuf,
    /// UTF-8 text file to score.
    #[arg(short, long)]
    file: PathBuf,
    /// Context (chunk) length in tokens.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    ctx: usize,
    /// Number of chunks to score (default: every full chunk of the file).
    #[arg(long)]
    chunks: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    if args.ctx < 4 {
        bail!("--ctx-size must be at least 4, got {}", args.ctx);
    }
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let tokenizer = Tokenizer::from_file(&args.model)?;
    let mut model = Llama::from_hf_dir(&args.model, &Device::Cpu)?;
    let tokens = tokenizer.encode(&text, true)?;
    let protocol = PerplexityProtocol {
        n_ctx: args.ctx,
        n_chunks: args.chunks,
        bos: tokenizer.prepended_bos()?,
    };
    let n_chunks = protocol.n_chunks_for(tokens.len())?;
    println!(
        "perplexity: {} tokens in {}, {} chunks of {} tokens, positions {}..{} of each chunk scored{}",
        tokens.len(),
        args.file.display(),
        n_chunks,
        args.ctx,
        protocol.first_scored(),
        args.ctx - 1,
        if protocol.bos.is_some() { ", first token of each chunk replaced by BOS" } else { "" },
    );
    let pb = bar(n_chunks as u64, "perplexity");
    let report = perplexity(
        &mut model,
        &tokens,
        &protocol,
        Some(&mut |done, _total, running| {
            pb.set_position(done as u64);
            pb.set_message(format!("running PPL {running:.4}"));
        }),
    )?;
    pb.finish_and_clear();
    for (i, p) in report.per_chunk_ppl.iter().enumerate() {
        print!("[{}]{:.4},", i + 1, p);
    }
    println!();
    println!("{report}");
    println!(
        "Final estimate: PPL = {:.4} +/- {:.5}",
        report.ppl, report.ppl_stderr
    );
    Ok(())
}
