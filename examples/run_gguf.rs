//! Run a GGUF file on shuku's engine: stream a completion and print the speed and memory.
//!
//! ```sh
//! cargo run --release --example run_gguf -- target/compress_and_deploy/compressed-Q4_K_M.gguf "ROMEO:"
//! ```
//!
//! The file can come from shuku or from llama.cpp's tools; see `docs/infer.md` for how the engine
//! compares with llama.cpp.

mod common;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use shuku::infer::{Engine, EngineOptions, GenerationParams, SamplerConfig};

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "Generate from a GGUF file on shuku's engine")]
struct Args {
    /// The GGUF file.
    model: PathBuf,
    /// The prompt.
    #[arg(default_value = "ROMEO:")]
    prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long, default_value_t = 64)]
    tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    /// Sampler seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Compute threads (0: every core).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
}

fn main() -> ExitCode {
    common::exit_with(run(Args::parse()))
}

fn run(args: Args) -> Result<()> {
    let engine = Engine::load(
        &args.model,
        EngineOptions {
            threads: args.threads,
            ..Default::default()
        },
    )
    .with_context(|| format!("loading {}", args.model.display()))?;
    let sampler = if args.temp <= 0.0 {
        SamplerConfig::greedy()
    } else {
        SamplerConfig {
            temperature: args.temp,
            ..SamplerConfig::default()
        }
    };
    let params = GenerationParams {
        max_tokens: args.tokens,
        sampler,
        seed: Some(args.seed),
        ..Default::default()
    };
    let mut session = engine.new_session();
    let mut stream = engine.generate(&mut session, args.prompt.as_str(), params)?;
    print!("{}", args.prompt);
    for token in stream.by_ref() {
        print!("{}", token?.text_piece);
        std::io::stdout().flush()?;
    }
    let generation = stream.finish()?;
    println!("\n\n{}", generation.metrics);
    Ok(())
}
