//! Pruning only: structured removal (FFN channels, attention heads, layers) or unstructured
//! sparsity, with held-out perplexity before and after.
//!
//! ```sh
//! cargo run --release --example prune_model                                  # base model, ffn=0.25,heads=0.25
//! cargo run --release --example prune_model -- --spec ffn=0.5 --out target/half-ffn
//! cargo run --release --example prune_model -- --wanda 0.5                   # 50 % unstructured (Wanda)
//! ```
//!
//! See `docs/prune.md` for the methods and `compress_and_deploy` for recovery and quantization
//! after pruning.

mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use common::{model_dir, prepare_out_dir, progress, set_threads};
use shuku::candle::Device;
use shuku::distill::corpus::split_tail;
use shuku::eval::PerplexityProtocol;
use shuku::model::{Llama, Tokenizer};
use shuku::prune::{calibration_samples, Importance, Method, Pruner, StructuredSpec};

const DEFAULT_OUT: &str = "target/prune_model";

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "Prune a model and measure its held-out perplexity before and after")]
struct Args {
    #[command(flatten)]
    input: common::ModelText,
    /// Structured removal, e.g. `ffn=0.25,heads=0.25,layers=1`.
    #[arg(long, default_value = "ffn=0.25,heads=0.25")]
    spec: String,
    /// Unstructured Wanda sparsity instead of structured removal.
    #[arg(long)]
    wanda: Option<f64>,
    /// Window length of calibration and evaluation.
    #[arg(short = 'c', long, default_value_t = 128)]
    ctx: usize,
    /// Compute threads (0: every core).
    #[arg(short = 't', long, default_value_t = 2)]
    threads: usize,
    /// Output HF folder.
    #[arg(long, default_value = DEFAULT_OUT)]
    out: PathBuf,
    /// Replace an existing non-empty output folder.
    #[arg(long)]
    overwrite: bool,
}

fn main() -> ExitCode {
    common::exit_with(run(Args::parse()))
}

fn run(args: Args) -> Result<()> {
    let pruner = match args.wanda {
        Some(sparsity) => Pruner::unstructured(Method::Wanda, sparsity),
        None => {
            let spec: StructuredSpec = args.spec.parse().context("--spec")?;
            spec.validate().context("--spec")?;
            Pruner::structured(spec)
                .importance(Importance::Taylor)
                .round_to(64)
        }
    };
    set_threads(args.threads);
    let dir = model_dir(&args.input.model)?;
    let out = prepare_out_dir(&args.out, DEFAULT_OUT, args.overwrite)?;
    let model = Llama::from_hf_dir(&dir, &Device::Cpu)?;
    let tokenizer = Tokenizer::from_file(&dir)?;
    let text = std::fs::read_to_string(&args.input.text)
        .with_context(|| format!("reading --text {}", args.input.text.display()))?;
    let (calib, eval) = split_tail(&text, 0.05)?;
    let (calib, eval) = (
        tokenizer.encode(calib, true)?,
        tokenizer.encode(eval, true)?,
    );
    let eval = &eval[..eval.len().min(32 * args.ctx)];
    let protocol = PerplexityProtocol::new(args.ctx);

    let before = model.perplexity(eval, &protocol)?;
    let bar = progress(0, "pruning");
    let pruned = pruner
        .calibration(calibration_samples(&calib, 32, args.ctx)?)
        .progress(|what, done, total| {
            bar.set_message(what.to_string());
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })
        .run(model)?;
    bar.finish_and_clear();
    let after = pruned.model.perplexity(eval, &protocol)?;
    let r = &pruned.report;
    println!(
        "parameters {} → {} ({:+.1} %), held-out perplexity {:.2} → {:.2}, {:.1} s",
        r.params_before,
        r.params_after,
        100.0 * (r.params_after as f64 / r.params_before as f64 - 1.0),
        before.ppl,
        after.ppl,
        r.prune_seconds
    );
    if let Some(s) = &r.sparsity {
        println!(
            "sparsity of the pruned matrices {:.1} %, of the whole model {:.1} %",
            100.0 * s.overall(),
            100.0 * s.of_model(&pruned.model)
        );
    }
    let out_dir = out.join("model");
    pruned.model.save_hf_dir(&out_dir, Some(&dir), true)?;
    println!("written: {}", out_dir.display());
    Ok(())
}
