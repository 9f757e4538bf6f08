//! The compress-then-deploy pipeline, stage by stage, with one measured table.
//!
//! ```sh
//! cargo run --release --example compress_and_deploy                   # the embedded base model, offline
//! cargo run --release --example compress_and_deploy -- --model ~/.cache/shuku-assets/hf/SmolLM2-135M-Instruct-f32 \
//!     --prune ffn=0.1 --recover-steps 40 --preset Q4_K_M,Q3_K_M --gptq
//! ```
//!
//! load → evaluate → structured prune → distil to recover (the original as teacher) → importance
//! matrix from calibration text → quantize → write GGUF → load in shuku-infer → generate. Every
//! preset is also applied to the unpruned original, so the table and the plot show what pruning
//! bought at each size. Each row: parameters, size on disk, bits per weight, held-out perplexity,
//! KL divergence and same-top-1 against the original, decode tokens/s, P95 per-token latency and
//! the peak memory of that model running alone (measured in a child process). The table is
//! printed and written as `stages.json`, the size/quality plot as `size_vs_kld.svg`.
//!
//! Text: calibration and recovery use the head of `--text`, evaluation its held-out last 5 %
//! (for the base model, the part of its corpus it never trained on).

mod common;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use common::{model_dir, prepare_out_dir, progress, set_threads};
use shuku::candle::Device;
use shuku::distill::corpus::split_tail;
use shuku::distill::Distillation;
use shuku::eval::PerplexityProtocol;
use shuku::infer::{Engine, EngineOptions, GenerationParams, Prompt, SamplerConfig};
use shuku::model::{Llama, Tokenizer};
use shuku::pipeline::{
    model_bytes, plot_svg, quality, serve_isolated_measurement, speed_isolated, Deployable,
    SpeedOptions, StageRow, StageTable,
};
use shuku::prune::{calibration_samples, parameter_count, Importance, Pruner, StructuredSpec};
use shuku::quantize::{chunks, collect_imatrix, ChunkOptions, GptqOptions, Quantizer};

/// Where the stages' models, the table and the plot go unless `--out` says otherwise.
const DEFAULT_OUT: &str = "target/compress_and_deploy";

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "Prune, recover, quantize and deploy a model, measuring every stage")]
struct Args {
    #[command(flatten)]
    input: common::ModelText,
    /// Structured pruning, e.g. `ffn=0.25,heads=0.25,layers=1`; `none` skips pruning and recovery.
    #[arg(long, default_value = "ffn=0.25")]
    prune: String,
    /// Importance of heads and channels.
    #[arg(long, value_enum, default_value = "taylor")]
    importance: ImportanceArg,
    /// Kept FFN widths are multiples of this (256 keeps every K-quant applicable).
    #[arg(long, default_value_t = 256)]
    round_to: usize,
    /// Distillation steps after pruning, the original as teacher.
    #[arg(long, default_value_t = 100)]
    recover_steps: usize,
    /// Sequences per recovery step.
    #[arg(long, default_value_t = 8)]
    recover_batch: usize,
    /// Peak learning rate of recovery.
    #[arg(long, default_value_t = 1e-4)]
    recover_lr: f64,
    /// Quantization presets (llama-quantize's names), comma-separated.
    #[arg(long, default_value = "Q4_K_M", value_delimiter = ',')]
    preset: Vec<String>,
    /// Round with GPTQ instead of to nearest (importance-weighted either way).
    #[arg(long)]
    gptq: bool,
    /// Instead of each preset's own size, choose tensor types by sensitivity under this budget.
    #[arg(long)]
    target_bpw: Option<f64>,
    /// Context of calibration, recovery and evaluation windows.
    #[arg(short = 'c', long, default_value_t = 128)]
    ctx: usize,
    /// Calibration windows (imatrix, GPTQ, pruning importance).
    #[arg(long, default_value_t = 32)]
    calib_chunks: usize,
    /// Evaluation windows (at most).
    #[arg(long, default_value_t = 32)]
    eval_chunks: usize,
    /// Tokens decoded per speed measurement.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Compute threads (0: every core).
    #[arg(short = 't', long, default_value_t = 2)]
    threads: usize,
    /// Output folder (the models of every stage, stages.json, size_vs_kld.svg).
    #[arg(long, default_value = DEFAULT_OUT)]
    out: PathBuf,
    /// Replace an existing non-empty output folder (the default folder is always replaced).
    #[arg(long)]
    overwrite: bool,
}

/// `--importance`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ImportanceArg {
    L1,
    L2,
    Activation,
    Taylor,
}

impl From<ImportanceArg> for Importance {
    fn from(i: ImportanceArg) -> Self {
        match i {
            ImportanceArg::L1 => Importance::L1,
            ImportanceArg::L2 => Importance::L2,
            ImportanceArg::Activation => Importance::Activation,
            ImportanceArg::Taylor => Importance::Taylor,
        }
    }
}

fn main() -> ExitCode {
    serve_isolated_measurement();
    common::exit_with(run(Args::parse()))
}

fn run(args: Args) -> Result<()> {
    // Refuse bad requests before any work.
    let presets = common::presets(&args.preset)?;
    let spec: Option<StructuredSpec> = match args.prune.as_str() {
        "none" => None,
        s => Some(s.parse().context("--prune")?),
    };
    if let Some(spec) = &spec {
        spec.validate().context("--prune")?;
    }
    set_threads(args.threads);

    // 1. The original model and the text.
    let model_dir = model_dir(&args.input.model)?;
    let out = prepare_out_dir(&args.out, DEFAULT_OUT, args.overwrite)?;
    let original = Llama::from_hf_dir(&model_dir, &Device::Cpu)
        .with_context(|| format!("loading {}", model_dir.display()))?;
    let tokenizer = Tokenizer::from_file(&model_dir)?;
    let text = std::fs::read_to_string(&args.input.text)
        .with_context(|| format!("reading --text {}", args.input.text.display()))?;
    let (calib_text, eval_text) = split_tail(&text, 0.05)?;
    let calib = tokenizer.encode(calib_text, true)?;
    let eval = tokenizer.encode(eval_text, true)?;
    let eval = &eval[..eval.len().min(args.ctx * args.eval_chunks)];
    let protocol = PerplexityProtocol::new(args.ctx);
    let speed_options = SpeedOptions {
        prompt: eval[..eval.len().min(16)].to_vec(),
        decode_tokens: args.decode_tokens,
        threads: args.threads,
    };
    println!(
        "model {}: {} parameters; {} calibration and {} evaluation tokens",
        model_dir.display(),
        parameter_count(&original) as u64,
        calib.len(),
        eval.len()
    );

    let mut table = StageTable::new(model_dir.display().to_string());
    // One row: quality on the held-out text (against the original unless this is it), size, and
    // speed and memory of the stage's file running alone.
    let measure = |stage: String,
                   series: Option<&str>,
                   path: &Path,
                   test: &mut dyn shuku::eval::LogitsSource,
                   parameters: u64|
     -> Result<StageRow> {
        let bar = progress(0, &format!("evaluating {stage}"));
        let mut tick = |done: usize, total: usize, _: f64| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        };
        let mut reference = &original;
        let against =
            (path != model_dir).then_some(&mut reference as &mut dyn shuku::eval::LogitsSource);
        let quality = quality(against, test, eval, &protocol, Some(&mut tick))?;
        bar.set_message(format!("decode speed of {stage}"));
        let target = if path.is_dir() {
            Deployable::HfDir(path.to_path_buf())
        } else {
            Deployable::Gguf(path.to_path_buf())
        };
        let speed = speed_isolated(&target, &speed_options)?;
        bar.finish_and_clear();
        println!(
            "{stage}: PPL {:.3}, mean KLD {}, decode {:.1} tok/s",
            quality.ppl,
            quality.mean_kld.map_or("—".into(), |k| format!("{k:.5}")),
            speed.tokens_per_s
        );
        Ok(StageRow {
            stage,
            series: series.map(String::from),
            parameters,
            file_bytes: model_bytes(path)?,
            quality,
            speed: Some(speed),
        })
    };
    let mut original_source = &original;
    table.push(measure(
        "original".into(),
        None,
        &model_dir,
        &mut original_source,
        parameter_count(&original) as u64,
    )?);

    // 2. Structured pruning, then recovery by distillation from the original.
    let compressed_dir = match &spec {
        None => model_dir.clone(),
        Some(spec) => {
            let bar = progress(0, "pruning");
            let samples = calibration_samples(&calib, args.calib_chunks, args.ctx)?;
            let pruned = Pruner::structured(*spec)
                .importance(args.importance.into())
                .round_to(args.round_to)
                .calibration(samples)
                .progress(|what, done, total| {
                    bar.set_message(format!("pruning: {what}"));
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                })
                .run(Llama::from_hf_dir(&model_dir, &Device::Cpu)?)?;
            bar.finish_and_clear();
            let student = pruned.model;
            let pruned_dir = out.join("pruned");
            student.save_hf_dir(&pruned_dir, Some(&model_dir), true)?;
            let n = parameter_count(&student) as u64;
            let mut s = &student;
            table.push(measure(
                format!("pruned {}", args.prune),
                None,
                &pruned_dir,
                &mut s,
                n,
            )?);

            if args.recover_steps > 0 {
                Distillation::new(args.recover_steps, args.ctx)
                    .batch_size(args.recover_batch)
                    .lr(args.recover_lr)
                    .run(&student, Some(&original), &calib)?;
            }
            let recovered_dir = out.join("recovered");
            student.save_hf_dir(&recovered_dir, Some(&model_dir), true)?;
            let mut s = &student;
            let stage = format!("recovered ({} steps)", args.recover_steps);
            table.push(measure(stage, None, &recovered_dir, &mut s, n)?);
            recovered_dir
        }
    };

    // 3. Quantization: an importance matrix from the calibration text, then each preset, applied to
    //    the compressed model and (for comparison) to the original.
    let calib_chunks = chunks(
        &calib,
        ChunkOptions {
            n_ctx: args.ctx,
            max_chunks: Some(args.calib_chunks),
            bos: None,
        },
    );
    let mut sources = vec![("quantize only", model_dir.clone())];
    if spec.is_some() {
        sources.push(("prune + recover + quantize", compressed_dir.clone()));
    }
    let mut last_gguf = None;
    for (series, dir) in &sources {
        let model = Llama::from_hf_dir(dir, &Device::Cpu)?;
        let bar = progress(
            calib_chunks.len() as u64,
            &format!("importance matrix ({series})"),
        );
        let imatrix = collect_imatrix(&model, &calib_chunks, "calibration", &mut |d, _| {
            bar.set_position(d as u64)
        })?;
        bar.finish_and_clear();
        for (name, ftype) in &presets {
            let mut quantizer = Quantizer::new(*ftype)
                .imatrix("calibration", imatrix.clone())
                .overwrite(true);
            if args.gptq {
                quantizer = quantizer.gptq(GptqOptions::new(calib_chunks.clone()));
            }
            if let Some(bpw) = args.target_bpw {
                quantizer = quantizer.target_bpw(bpw, calib_chunks.clone());
            }
            let tag = if *series == "quantize only" {
                "original"
            } else {
                "compressed"
            };
            let gguf = out.join(format!("{tag}-{name}.gguf"));
            let bar = progress(0, &format!("quantizing {tag} to {name}"));
            quantizer.run_with_progress(dir, &gguf, &mut |done, total, tensor| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
                bar.set_message(format!("quantizing {tag} to {name}: {tensor}"));
            })?;
            bar.finish_and_clear();
            let mut engine = Engine::load(
                &gguf,
                EngineOptions {
                    threads: args.threads,
                    context: args.ctx,
                    ..Default::default()
                },
            )?;
            let stage = if *series == "quantize only" {
                name.clone()
            } else {
                format!("pruned + {name}")
            };
            table.push(measure(
                stage,
                Some(series),
                &gguf,
                &mut engine,
                parameter_count(&model) as u64,
            )?);
            last_gguf = Some(gguf);
        }
    }

    // 4. Deploy: the last file on the engine, generating.
    if let Some(gguf) = &last_gguf {
        let engine = Engine::load(
            gguf,
            EngineOptions {
                threads: args.threads,
                ..Default::default()
            },
        )?;
        let mut session = engine.new_session();
        let params = GenerationParams {
            max_tokens: 48,
            sampler: SamplerConfig::greedy(),
            ..Default::default()
        };
        let sample = engine
            .generate(&mut session, Prompt::Text("ROMEO:".into()), params)?
            .finish()?;
        println!("\n{} generates:\nROMEO:{}\n", gguf.display(), sample.text);
    }

    println!("{table}");
    table.write_json(out.join("stages.json"))?;
    let title = format!("{}: size against KL divergence", model_dir.display());
    plot_svg(out.join("size_vs_kld.svg"), &title, &table.plot_series())?;
    println!(
        "written: {0}/stages.json, {0}/size_vs_kld.svg",
        out.display()
    );
    Ok(())
}
