//! Every quantization preset on one model: the size/quality table and plot a user wants before
//! choosing a preset.
//!
//! ```sh
//! cargo run --release --example quantize_sweep                          # the embedded base model
//! cargo run --release --example quantize_sweep -- --model DIR --gptq --target-bpw 4.5,5.0 \
//!     --llama-quantize ~/.cache/shuku-llamacpp/bin/llama-quantize --include stages.json
//! ```
//!
//! Each preset is applied with an importance matrix from the calibration text (llama-quantize's
//! files, byte for byte). `--gptq` adds a curve rounded with GPTQ, `--target-bpw` a curve of
//! size budgets filled by measured sensitivity (rounded with GPTQ too under `--gptq`), and `--llama-quantize PATH` a curve made by
//! llama.cpp's own tool from the same F32 GGUF and the same importance matrix (the first curve,
//! when given: the one the others are compared with). `--include` adds
//! the plotted rows of other runs' `stages.json` (e.g. `compress_and_deploy`'s) to the plot, and
//! every point off the first curve is reported (`--plot-only` redraws and compares saved tables
//! without quantizing anything) as "x % smaller than the first curve at equal
//! KL divergence".

mod common;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::Parser;
use common::{model_dir, prepare_out_dir, progress, set_threads};
use shuku::candle::Device;
use shuku::distill::corpus::split_tail;
use shuku::eval::PerplexityProtocol;
use shuku::infer::{Engine, EngineOptions};
use shuku::model::export::{convert_hf_dir, ExportOptions, OutType, PlainEncoder};
use shuku::model::{Llama, Tokenizer};
use shuku::pipeline::{model_bytes, plot_svg, quality, PlotSeries, StageRow, StageTable};
use shuku::prune::parameter_count;
use shuku::quantize::{chunks, collect_imatrix, preset, ChunkOptions, GptqOptions, Quantizer};

const DEFAULT_OUT: &str = "target/quantize_sweep";
const DEFAULT_PRESETS: &str = "Q2_K,Q3_K_S,Q3_K_M,Q3_K_L,Q4_K_S,Q4_K_M,Q5_K_S,Q5_K_M,Q6_K,Q8_0";

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "Quantize one model with every preset and plot size against quality")]
struct Args {
    #[command(flatten)]
    input: common::ModelText,
    /// Presets, comma-separated.
    #[arg(long, default_value = DEFAULT_PRESETS, value_delimiter = ',')]
    presets: Vec<String>,
    /// Add a curve rounded with GPTQ, and round the size budgets with GPTQ.
    #[arg(long)]
    gptq: bool,
    /// Add a curve of size budgets (bits per weight), comma-separated.
    #[arg(long, value_delimiter = ',')]
    target_bpw: Vec<f64>,
    /// Add a curve made by this llama-quantize binary (same F32 input, same importance matrix).
    #[arg(long)]
    llama_quantize: Option<PathBuf>,
    /// Other runs' stages.json / sweep.json whose plotted rows join the plot and the comparison.
    #[arg(long)]
    include: Vec<PathBuf>,
    /// Quantize nothing: plot and compare the `--include`d tables only (the first curve is the
    /// first table's first series).
    #[arg(long, requires = "include")]
    plot_only: bool,
    /// Context of calibration and evaluation windows.
    #[arg(short = 'c', long, default_value_t = 128)]
    ctx: usize,
    /// Calibration windows.
    #[arg(long, default_value_t = 32)]
    calib_chunks: usize,
    /// Evaluation windows (at most).
    #[arg(long, default_value_t = 32)]
    eval_chunks: usize,
    /// Compute threads (0: every core).
    #[arg(short = 't', long, default_value_t = 2)]
    threads: usize,
    /// Output folder (the GGUF files, sweep.json, sweep.svg).
    #[arg(long, default_value = DEFAULT_OUT)]
    out: PathBuf,
    /// Replace an existing non-empty output folder (the default folder is always replaced).
    #[arg(long)]
    overwrite: bool,
}

fn main() -> ExitCode {
    common::exit_with(run(Args::parse()))
}

fn run(args: Args) -> Result<()> {
    let presets = common::presets(&args.presets)?;
    if let Some(bin) = &args.llama_quantize {
        if !bin.is_file() {
            bail!("--llama-quantize {}: no such file", bin.display());
        }
    }
    let included = args
        .include
        .iter()
        .map(|p| StageTable::read_json(p).with_context(|| format!("--include {}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    if args.plot_only {
        let out = prepare_out_dir(&args.out, DEFAULT_OUT, args.overwrite)?;
        let series: Vec<PlotSeries> = included.iter().flat_map(StageTable::plot_series).collect();
        report_savings(&series);
        let title = format!("{}: size against KL divergence", included[0].model);
        plot_svg(out.join("sweep.svg"), &title, &series)?;
        println!("written: {}/sweep.svg", out.display());
        return Ok(());
    }
    set_threads(args.threads);
    let dir = model_dir(&args.input.model)?;
    let out = prepare_out_dir(&args.out, DEFAULT_OUT, args.overwrite)?;
    let original = Llama::from_hf_dir(&dir, &Device::Cpu)?;
    let tokenizer = Tokenizer::from_file(&dir)?;
    let text = std::fs::read_to_string(&args.input.text)
        .with_context(|| format!("reading --text {}", args.input.text.display()))?;
    let (calib_text, eval_text) = split_tail(&text, 0.05)?;
    let calib = tokenizer.encode(calib_text, true)?;
    let eval = tokenizer.encode(eval_text, true)?;
    let eval = &eval[..eval.len().min(args.ctx * args.eval_chunks)];
    let protocol = PerplexityProtocol::new(args.ctx);
    let parameters = parameter_count(&original) as u64;

    let calib_chunks = chunks(
        &calib,
        ChunkOptions {
            n_ctx: args.ctx,
            max_chunks: Some(args.calib_chunks),
            bos: None,
        },
    );
    let bar = progress(calib_chunks.len() as u64, "importance matrix");
    let imatrix = collect_imatrix(&original, &calib_chunks, "calibration", &mut |d, _| {
        bar.set_position(d as u64)
    })?;
    bar.finish_and_clear();

    // Every file to measure: (series, stage, path).
    let mut files: Vec<(String, String, PathBuf)> = Vec::new();
    let quantize = |q: Quantizer, path: &PathBuf, label: &str| -> Result<()> {
        let bar = progress(0, label);
        q.overwrite(true)
            .run_with_progress(&dir, path, &mut |done, total, _| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })?;
        bar.finish_and_clear();
        Ok(())
    };
    // llama.cpp's own tool first: its curve is the one the others are compared with.
    if let Some(bin) = &args.llama_quantize {
        let f32_gguf = out.join("model-f32.gguf");
        let options = ExportOptions {
            name: None,
            overwrite: true,
            tokenizer_pre: None,
        };
        convert_hf_dir(
            &dir,
            &f32_gguf,
            &PlainEncoder(OutType::F32),
            &options,
            &mut |_, _, _| {},
        )?;
        let imatrix_path = imatrix.save(out.join("imatrix.gguf"), true)?;
        for (name, _) in &presets {
            let path = out.join(format!("{name}-llama-quantize.gguf"));
            let status = Command::new(bin)
                .arg("--imatrix")
                .arg(&imatrix_path)
                .arg(&f32_gguf)
                .arg(&path)
                .arg(name)
                .arg(args.threads.max(1).to_string())
                .output()
                .with_context(|| format!("running {}", bin.display()))?;
            if !status.status.success() {
                bail!(
                    "{} failed on {name}: {}",
                    bin.display(),
                    String::from_utf8_lossy(&status.stderr)
                        .lines()
                        .last()
                        .unwrap_or_default()
                );
            }
            files.push(("llama-quantize + imatrix".into(), name.clone(), path));
        }
    }

    for (name, ftype) in &presets {
        let path = out.join(format!("{name}.gguf"));
        let q = Quantizer::new(*ftype).imatrix("calibration", imatrix.clone());
        quantize(q, &path, &format!("{name} + imatrix"))?;
        files.push(("presets + imatrix".into(), name.clone(), path));
        if args.gptq {
            let path = out.join(format!("{name}-gptq.gguf"));
            let q = Quantizer::new(*ftype)
                .imatrix("calibration", imatrix.clone())
                .gptq(GptqOptions::new(calib_chunks.clone()));
            quantize(q, &path, &format!("{name} GPTQ"))?;
            files.push(("presets, GPTQ".into(), format!("{name} GPTQ"), path));
        }
    }
    for bpw in &args.target_bpw {
        let path = out.join(format!("bpw-{bpw}.gguf"));
        let mut q = Quantizer::new(preset("Q4_K_M")?)
            .imatrix("calibration", imatrix.clone())
            .target_bpw(*bpw, calib_chunks.clone());
        let mut series = "target-bpw";
        if args.gptq {
            q = q.gptq(GptqOptions::new(calib_chunks.clone()));
            series = "target-bpw + GPTQ";
        }
        quantize(q, &path, &format!("target {bpw} bpw"))?;
        files.push((series.into(), format!("{bpw} bpw"), path));
    }
    let mut table = StageTable::new(dir.display().to_string());
    for (series, stage, path) in files {
        let bar = progress(0, &format!("evaluating {stage} ({series})"));
        let mut engine = Engine::load(
            &path,
            EngineOptions {
                threads: args.threads,
                context: args.ctx,
                ..Default::default()
            },
        )?;
        let mut reference = &original;
        let q = quality(
            Some(&mut reference),
            &mut engine,
            eval,
            &protocol,
            Some(&mut |done, total, _| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }),
        )?;
        bar.finish_and_clear();
        table.push(StageRow {
            stage,
            series: Some(series),
            parameters,
            file_bytes: model_bytes(&path)?,
            quality: q,
            speed: None,
        });
    }
    println!("{table}");
    table.write_json(out.join("sweep.json"))?;

    let mut series = table.plot_series();
    for t in &included {
        series.extend(t.plot_series());
    }
    report_savings(&series);
    let title = format!("{}: size against KL divergence", dir.display());
    plot_svg(out.join("sweep.svg"), &title, &series)?;
    println!("written: {0}/sweep.json, {0}/sweep.svg", out.display());
    Ok(())
}

/// For every point off the first curve: how much smaller it is than the first curve at its KL
/// divergence (negative: larger), where the first curve reaches that KL divergence.
fn report_savings(series: &[PlotSeries]) {
    let Some((reference, others)) = series.split_first() else {
        return;
    };
    println!("size against \"{}\" at equal mean KLD:", reference.name);
    for s in others {
        for (mib, kld, label) in &s.points {
            match reference.size_at_kld(*kld) {
                Some(at) => println!(
                    "  {label} ({}): {mib:.2} MiB vs {at:.2} MiB → {:+.1} %",
                    s.name,
                    100.0 * (mib / at - 1.0)
                ),
                None => println!("  {label} ({}): KLD {kld:.5} is outside the curve", s.name),
            }
        }
    }
}
