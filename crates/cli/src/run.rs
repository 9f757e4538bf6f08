//! `shuku run MODEL.gguf -p PROMPT`: stream a continuation from a GGUF file.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::engine_args::{EngineArgs, SamplingArgs};
use crate::output::Output;

/// Continue a prompt with a GGUF model, streaming the text as it is generated.
///
/// The continuation (not the prompt) goes to standard output token by token; one line of metrics
/// goes to standard error at the end: prompt tokens, time to first token, prefill and decode speed,
/// per-token latency percentiles and the process's peak resident memory (VmHWM). Generation stops
/// at the model's end-of-generation token, before any --stop text, or after -n tokens. Sampling
/// follows llama.cpp (penalties, top-k, top-p, min-p, temperature); --temp 0 is greedy and --seed
/// makes sampled output reproducible.
///
/// Example: shuku run smollm2.gguf -p "The capital of France is" -n 32 --temp 0
///
/// Example: shuku run smollm2.gguf -p "Once upon a time" -n 128 --temp 0.7 --seed 42 --stop "The End"
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The GGUF model.
    model: PathBuf,
    /// The prompt (special tokens such as <|im_start|> written in it are recognised).
    #[arg(short, long)]
    prompt: String,
    /// Tokens to generate at most.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n_predict: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

pub fn run(args: Args) -> Result<()> {
    let engine = args.engine.load(&args.model)?;
    let mut session = engine.new_session();
    let mut stream = engine
        .generate(
            &mut session,
            args.prompt.as_str(),
            args.sampling.params(args.n_predict),
        )
        .context("cannot start generation")?;
    let mut out = Output::stdout();
    for token in &mut stream {
        let token = token.context("generation failed")?;
        out.text(&token.text_piece);
        out.flush();
    }
    out.line("");
    if let Some(g) = stream.summary() {
        eprintln!("{} | finish {}", g.metrics, g.finish_reason);
    }
    Ok(())
}
