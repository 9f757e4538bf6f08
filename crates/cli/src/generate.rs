//! `shuku generate --model HF_DIR -p PROMPT -n N`: greedy continuation with the full-precision model.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use shuku_model::Llama;

use crate::text_tokenizer::TextTokenizer;

/// Greedy continuation of a prompt with the full-precision model of an HF folder.
///
/// Prints the prompt followed by the continuation, as llama.cpp's llama-simple does, so the two can be
/// compared directly. This is the reference for checking converted and quantized files; the fast
/// engine for GGUF files is `shuku run`.
///
/// Example: shuku generate --model ./SmolLM2-135M -p "The capital of France is" -n 32
#[derive(Debug, clap::Args)]
pub struct Args {
    /// HF model folder (config.json, safetensors, and tokenizer.json or a vocabulary tokenizer.gguf).
    #[arg(short, long)]
    model: PathBuf,
    /// The prompt.
    #[arg(short, long)]
    prompt: String,
    /// Number of tokens to generate.
    #[arg(short = 'n', long, default_value_t = 32)]
    n_predict: usize,
    /// Print token ids instead of text.
    #[arg(long)]
    ids: bool,
}

pub fn run(args: Args) -> Result<()> {
    let tokenizer = TextTokenizer::open(&args.model)?;
    let model = Llama::from_hf_dir(&args.model, &Device::Cpu)?;
    let prompt = tokenizer.encode(&args.prompt)?;
    let mut generated = model
        .generate_greedy(&prompt, args.n_predict)
        .context("generation failed")?;
    // Stop at the first end-of-generation token, without printing it, as llama.cpp does.
    if let Some(end) = generated
        .iter()
        .position(|t| model.config().eos_token_ids.contains(t))
    {
        generated.truncate(end);
    }
    if args.ids {
        let all: Vec<String> = prompt
            .iter()
            .chain(&generated)
            .map(u32::to_string)
            .collect();
        println!("{}", all.join(" "));
    } else {
        let mut all = prompt.clone();
        all.extend(&generated);
        println!("{}", tokenizer.decode(&all)?);
    }
    Ok(())
}
